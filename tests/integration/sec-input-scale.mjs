// sec-input-scale.mjs — the per-user bounds at scale (issue 13 item 3), run
// by tests/integration/t0960-sec-input.sh (lighttpd + parley.fcgi, the
// WebSocket paths proxied to parley-ws, JWT on, RATE_LIMIT_MESSAGES_PER_MINUTE
// = RATE (30), the default PARLEY_POLL_MAX_SESSIONS (32), the SQLite
// database at PARLEY_DB_PATH).
//
//   - 10,000 POST /api/poll/open from one user, 64 at a time over kept-alive
//     connections: exactly 32 opened, every other one 429 rate_limited with
//     the documented message; the database holds 32 sessions of that user;
//     another user opens while it runs; Phoenix LongPoll sessions count in
//     the same cap; closing them makes room again (cleanup: none left).
//   - 40 messages from 5 clients of one user at once over mixed transports
//     (seed 001 over WebSocket, seed 000 over WebSocket, seed 001 over
//     long-poll, seed 004 over SSE, Phoenix over WebSocket): exactly RATE
//     answered, the others refused with each protocol's rate_limited
//     error; then 40 SSE sends fired at the same instant by another user:
//     exactly RATE again, and rate_hits holds RATE rows for each user.
import assert from 'node:assert/strict';
import { Agent, request as httpRequest } from 'node:http';
import { test } from 'node:test';
import { connect, jwtHS256, SLOW } from '../node/clients.mjs';
import { httpCall } from './sec-input-http.mjs';
import { lit, sql } from './sec-input-db.mjs';

const BASE = process.env.PARLEY_BASE;
const SECRET = process.env.PARLEY_JWT_SECRET;
const RATE = Number(process.env.RATE || 30);
if (!BASE || !SECRET) throw new Error('PARLEY_BASE, PARLEY_JWT_SECRET');
const WSB = BASE.replace(/^http/, 'ws');
const RUN = `${process.pid}${Date.now().toString(36)}`;
const FAST = '[[fake tokens=1 token_ms=0]]';
const MAX_SESSIONS = 32;
const user = (who) => `${who}-${RUN}`;
const tok = (who) => jwtHS256(SECRET, user(who));


async function http(method, path, { token, json, body, headers = {} } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  if (json !== undefined) { h['Content-Type'] = 'application/json'; body = JSON.stringify(json); }
  return httpCall(new URL(`${BASE}${path}`), { method, headers: h, body, timeoutMs: 60000 * SLOW });
}

// ---- 10,000 poll sessions from one user ---------------------------------------

// POST /api/poll/open over node:http with kept-alive connections: far
// cheaper per request than fetch(), which matters 10,000 times on a
// shared machine. Resolves with { status, text, json }.
const keepAlive = new Agent({ keepAlive: true, maxSockets: 64 });
function openFast(token, path) {
  const body = JSON.stringify({ path });
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${BASE}/api/poll/open`, { method: 'POST', agent: keepAlive, timeout: 60000 * SLOW,
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } },
    (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        let json = null;
        try { json = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode, text, json });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer within the timeout')));
    req.on('error', (e) => reject(new Error(`POST /api/poll/open: ${e.message} (${e.code})`)));
    req.end(body);
  });
}

test(`10,000 long-poll opens from one user: exactly ${MAX_SESSIONS} open, the rest 429 rate_limited; another user unaffected; Phoenix LongPoll in the same cap; closing makes room, none left`, { timeout: 240000 }, async () => {
  const t = tok('opener');
  const N = 10000;
  let next = 0;
  const statuses = {};
  const sids = [];
  const bad = [];
  const worker = async () => {
    while (next < N) {
      next++;
      const r = await openFast(t, '/ws/chat/techpro');
      statuses[r.status] = (statuses[r.status] || 0) + 1;
      if (r.status === 200) sids.push(r.json.sid);
      else if (r.status !== 429 || r.json?.code !== 'rate_limited' || !/Too many open poll sessions/.test(r.json.message)) {
        if (bad.length < 5) bad.push(`${r.status} ${r.text.slice(0, 200)}`);
      }
    }
  };
  // another user opens while the storm runs
  const other = (async () => {
    await new Promise((res) => setTimeout(res, 200));
    const r = await http('POST', '/api/poll/open', { token: tok('bystander'), json: { path: '/ws/chat/techpro' } });
    return r;
  })();
  await Promise.all(Array.from({ length: 64 }, worker));
  keepAlive.destroy();
  assert.deepEqual(bad, [], 'refusals other than the documented 429');
  assert.equal(statuses[200], MAX_SESSIONS, JSON.stringify(statuses));
  assert.equal(statuses[429], N - MAX_SESSIONS, JSON.stringify(statuses));
  assert.equal(Number(sql(`SELECT count(*) FROM poll_sessions WHERE owner = ${lit(user('opener'))}`)), MAX_SESSIONS);
  const o = await other;
  assert.equal(o.status, 200, `the other user was refused: ${o.text}`);
  // the refused opens left nothing behind: no outbox rows but the sessions'
  const orphans = Number(sql(`SELECT count(*) FROM poll_outbox WHERE sid NOT IN (SELECT sid FROM poll_sessions)`));
  assert.equal(orphans, 0);
  // Phoenix LongPoll sessions are poll sessions of the user too: at the cap,
  // a new one is refused ({"status":500}, phoenix.js backs off)
  const qs = new URLSearchParams({ vsn: '2.0.0', auth_token: t });
  const full = (await httpCall(new URL(`${BASE}/socket/longpoll?${qs}`))).json;
  assert.equal(full.status, 500, JSON.stringify(full));
  // cleanup: every session closed, the user may open again
  const del = await Promise.all(sids.map((s) => http('DELETE', `/api/poll/${s}`, { token: t })));
  assert.deepEqual([...new Set(del.map((d) => d.status))], [204]);
  assert.equal(Number(sql(`SELECT count(*) FROM poll_sessions WHERE owner = ${lit(user('opener'))}`)), 0);
  const lpNew = (await httpCall(new URL(`${BASE}/socket/longpoll?${qs}`))).json;
  assert.equal(lpNew.status, 410, JSON.stringify(lpNew));
  const again = await http('POST', '/api/poll/open', { token: t, json: { path: '/ws/chat/techpro' } });
  assert.equal(again.status, 200, again.text);
});

// ---- rate limit under concurrency --------------------------------------------------

// Each client sends n messages one after the other; resolves with 'ok' or
// 'limited' per message (anything else fails the test).
async function viaWs001(t, n, tag) {
  const c = await connect(`${WSB}/ws/rl-${RUN}-${tag}?token=${t}`);
  await c.until((m) => m.some((x) => x.type === 'connected'), 20000 * SLOW);
  const out = [];
  for (let i = 0; i < n; i++) {
    const before = c.msgs.length;
    c.ws.send(JSON.stringify({ type: 'message', content: `${tag} ${i} ${FAST}`, metadata: {} }));
    const end = (m) => m.type === 'stream_end' || m.type === 'error';
    await c.until((m) => m.slice(before).some(end), 30000 * SLOW);
    const f = c.msgs.slice(before).find(end);
    out.push(outcome(f.type === 'error', f.code, f));
  }
  c.ws.close();
  return out;
}
async function viaWs000(t, n, tag) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const c = await connect(`${WSB}/api/websocket/chat/rl-${RUN}-${tag}-${i}?token=${t}`);
    c.ws.send(JSON.stringify({ ticketBody: `${tag} ${i} ${FAST}` }));
    const end = (m) => m.type === 'done' || m.type === 'error';
    await c.until((m) => m.some(end), 30000 * SLOW);
    const f = c.msgs.find(end);
    out.push(outcome(f.type === 'error', f.code, f));
    c.ws.close();
  }
  return out;
}
async function viaPoll001(t, n, tag) {
  const o = await http('POST', '/api/poll/open', { token: t, json: { path: `/ws/rl-${RUN}-${tag}` } });
  assert.equal(o.status, 200, o.text);
  const sid = o.json.sid;
  let cursor = 0;
  const out = [];
  for (let i = 0; i < n; i++) {
    const p = await http('POST', `/api/poll/${sid}`, { token: t, json: { type: 'message', content: `${tag} ${i} ${FAST}`, metadata: {} } });
    assert.equal(p.status, 202, p.text);
    const t0 = Date.now();
    let f;
    while (!f) {
      assert.ok(Date.now() - t0 < 30000 * SLOW, 'long-poll: no end frame');
      const g = await http('GET', `/api/poll/${sid}?cursor=${cursor}&wait=5`, { token: t });
      assert.equal(g.status, 200, g.text);
      cursor = g.json.cursor;
      f = g.json.messages.find((m) => m.type === 'stream_end' || m.type === 'error');
    }
    out.push(outcome(f.type === 'error', f.code, f));
  }
  await http('DELETE', `/api/poll/${sid}`, { token: t });
  return out;
}
async function viaSse(t, n, tag) {
  const c = await http('POST', '/api/chat/sessions', { token: t, json: { kind: 'sse' } });
  assert.equal(c.status, 201, c.text);
  const out = [];
  for (let i = 0; i < n; i++) out.push(await sseOne(t, c.json.id, `${tag} ${i}`));
  return out;
}
async function sseOne(t, conv, text) {
  const r = await http('POST', '/api/chat/send', { token: t, json: { conversationId: conv, content: `${text} ${FAST}` } });
  if (r.status === 429) return outcome(true, r.json?.code, r.json);
  assert.equal(r.status, 200, r.text);
  assert.match(r.text, /"done": *true/, r.text);
  assert.doesNotMatch(r.text, /"error"/, r.text);
  return 'ok';
}
async function viaPhoenix(t, n, tag) {
  const c = await connect(`${WSB}/socket/websocket?vsn=2.0.0&auth_token=${t}`);
  const topic = `proxy:rl-${RUN}-${tag}`;
  c.ws.send(JSON.stringify(['1', '1', topic, 'phx_join', {}]));
  await c.until((m) => m.some((f) => f[1] === '1' && f[3] === 'phx_reply'), 20000 * SLOW);
  assert.equal(c.msgs.find((f) => f[1] === '1')[4].status, 'ok');
  const out = [];
  for (let i = 0; i < n; i++) {
    const ref = String(10 + i);
    const before = c.msgs.length;
    c.ws.send(JSON.stringify(['1', ref, topic, 'query', { query: `${tag} ${i} ${FAST}` }]));
    await c.until((m) => m.slice(before).some((f) => f[1] === ref && f[3] === 'phx_reply'), 30000 * SLOW);
    const rep = c.msgs.slice(before).find((f) => f[1] === ref && f[3] === 'phx_reply');
    if (rep[4].status === 'error') { out.push(outcome(true, rep[4].response.code, rep)); continue; }
    await c.until((m) => m.slice(before).some((f) => f[3] === 'response' || f[3] === 'error'), 30000 * SLOW);
    const ev = c.msgs.slice(before).find((f) => f[3] === 'response' || f[3] === 'error');
    out.push(outcome(ev[3] === 'error', ev[4].code, ev));
  }
  c.ws.close();
  return out;
}
function outcome(isError, code, frame) {
  if (!isError) return 'ok';
  assert.equal(code, 'rate_limited', `an error other than the rate limit: ${JSON.stringify(frame)}`);
  return 'limited';
}

test(`rate limit ${RATE}/minute: 40 messages from 5 clients of one user on WebSocket 001, WebSocket 000, long-poll, SSE and Phoenix at once → exactly ${RATE} answered, the rest rate_limited`, { timeout: 120000 }, async () => {
  const t = tok('limited');
  const per = 8;
  const res = await Promise.all([viaWs001(t, per, 'w1'), viaWs000(t, per, 'w0'), viaPoll001(t, per, 'lp'),
    viaSse(t, per, 'sse'), viaPhoenix(t, per, 'phx')]);
  const all = res.flat();
  assert.equal(all.length, 40);
  const okN = all.filter((x) => x === 'ok').length;
  assert.equal(okN, RATE, `accepted per client: ${JSON.stringify(res.map((r) => r.filter((x) => x === 'ok').length))}`);
  assert.equal(all.length - okN, 40 - RATE);
  assert.equal(Number(sql(`SELECT count(*) FROM rate_hits WHERE user_id = ${lit('user:' + user('limited'))}`)), RATE);
});

test(`rate limit ${RATE}/minute: 40 SSE sends fired at the same instant (40 conversations) → exactly ${RATE} answered, 10 × 429 rate_limited`, { timeout: 120000 }, async () => {
  const t = tok('burst');
  const convs = await Promise.all(Array.from({ length: 40 }, async () => {
    const c = await http('POST', '/api/chat/sessions', { token: t, json: { kind: 'sse' } });
    assert.equal(c.status, 201, c.text);
    return c.json.id;
  }));
  const all = await Promise.all(convs.map((id, i) => sseOne(t, id, `burst ${i}`)));
  assert.equal(all.filter((x) => x === 'ok').length, RATE, JSON.stringify(all));
  assert.equal(all.filter((x) => x === 'limited').length, 40 - RATE);
  assert.equal(Number(sql(`SELECT count(*) FROM rate_hits WHERE user_id = ${lit('user:' + user('burst'))}`)), RATE);
});
