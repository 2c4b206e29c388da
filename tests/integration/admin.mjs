// admin.mjs — the admin endpoints (docs/admin.md) through a real web server,
// run by t0860-admin.sh once per setup (lighttpd, Apache + mod_fcgid), the
// WebSocket bridge behind it, JWT required:
//   - every /api/admin/ endpoint: 401 without a token, 403 with a token
//     without role "admin", 200/202 with one;
//   - a generation running on the bridge (a WebSocket client, the simulated
//     LLM's slow mode) is listed with channel, user, tokens so far and age;
//     the admin stops it by job id: the upstream connection is closed, the
//     client gets stream_end marked stopped, the list no longer has it, a
//     second stop is 409; a bad id 400, an unknown one 404;
//   - open connections: a WebSocket client and a long-poll client show in
//     the totals (the bridge's presence row, the database's sessions) and
//     leave them when they close; so do a Phoenix socket (the bridge) and
//     an SSE stream (parley.fcgi's presence rows).
//
//   BASE=http://127.0.0.1:PORT FAKE_LLM_URL=... SECRET=... RUN=tag \
//     node --test --test-reporter=tap tests/integration/admin.mjs
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { connect, SLOW } from '../node/clients.mjs';

const BASE = process.env.BASE;
const WS = BASE.replace(/^http/, 'ws');
const FAKE = process.env.FAKE_LLM_URL;
const SECRET = process.env.SECRET;
const RUN = process.env.RUN || `r${process.pid}`;
const SLOWLY = '[[fake tokens=800 token_ms=15]]';

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
function jwt(sub, role) {
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600, ...(role ? { role } : {}) });
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}
const ALICE = jwt(`alice-${RUN}`);
const ADMIN = jwt('root', 'admin');
const OTHER_ROLE = jwt('carol', 'support');

async function api(method, path, token, body) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body) headers['content-type'] = 'application/json';
  const r = await fetch(`${BASE}${path}`, { method, headers, body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(10000) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, json, text };
}

async function fakeRequests(tag) {
  const r = await fetch(`${FAKE}/_fake/requests`);
  return (await r.json()).requests.filter((q) => q.prompt?.startsWith(tag));
}

// Polls fn() until it returns a truthy value (returned), at most ms.
async function eventually(what, fn, ms = 8000 * SLOW) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    assert.ok(Date.now() < end, `timed out waiting for ${what}`);
    await sleep(100);
  }
}

const has = (type) => (msgs) => msgs.some((m) => m.type === type);
const ENDPOINTS = [
  ['GET', '/api/admin/overview'], ['GET', '/api/admin/generations'], ['GET', '/api/admin/connections'],
  ['POST', '/api/admin/generations/1/stop'],
];

test('every admin endpoint: 401 without a token, 403 without role "admin"', async () => {
  for (const [m, p] of ENDPOINTS) {
    const none = await api(m, p);
    assert.equal(none.status, 401, `${m} ${p} without a token: ${none.text}`);
    assert.equal(none.json?.success, false);
    for (const tok of [ALICE, OTHER_ROLE]) {
      const r = await api(m, p, tok);
      assert.equal(r.status, 403, `${m} ${p} with a non-admin token: ${r.text}`);
      assert.equal(r.json.code, 'forbidden');
    }
    const bad = await api(m, p, `${ADMIN}x`);
    assert.equal(bad.status, 401, `${m} ${p} with a bad signature: ${bad.text}`);
  }
});

test('an admin reads the overview: stats, generations, connections, upstreams', async () => {
  const r = await api('GET', '/api/admin/overview', ADMIN);
  assert.equal(r.status, 200, r.text);
  const o = r.json;
  for (const k of ['tickets', 'conversations', 'messages', 'answers_cached'])
    assert.equal(typeof o.stats.counts[k], 'number', `stats.counts.${k}`);
  for (const k of ['running', 'done', 'stopped', 'failed'])
    assert.equal(typeof o.stats.generations[k], 'number', `stats.generations.${k}`);
  assert.equal(typeof o.stats.errors_last_hour.total, 'number');
  assert.ok('hit_rate' in o.stats.cache && typeof o.stats.cache.basis === 'string');
  assert.match(o.stats.tokens_today.day, /^\d{4}-\d{2}-\d{2}$/);
  assert.ok(Array.isArray(o.generations));
  assert.equal(typeof o.connections.totals.websocket, 'number');
  assert.ok(Array.isArray(o.upstreams.this_process) && o.upstreams.this_process.length >= 1);
  assert.ok(['closed', 'open', 'half-open'].includes(o.upstreams.this_process[0].breaker));
  // both kinds of process report themselves
  const programs = await eventually('both programs in the presence rows', async () => {
    const c = await api('GET', '/api/admin/connections', ADMIN);
    const p = new Set(c.json.processes.map((x) => x.program));
    return p.has('parley-ws') && p.has('parley.fcgi') ? p : null;
  });
  assert.ok(programs.size >= 2);
});

test('an admin sees a running generation (channel, user, tokens so far, age) and stops it by job id', async () => {
  const sid = `adm-${RUN}`;
  const tag = `admin-${RUN}-gen`;
  const ws = await connect(`${WS}/ws/${sid}?token=${ALICE}`);
  await ws.until(has('connected'));
  ws.ws.send(JSON.stringify({ type: 'message', content: `${tag} ${SLOWLY}` }));
  await ws.until((m) => m.filter((x) => x.type === 'stream_chunk').length >= 5);
  const g = await eventually('the generation in /api/admin/generations', async () => {
    const r = await api('GET', '/api/admin/generations', ADMIN);
    assert.equal(r.status, 200, r.text);
    return r.json.generations.find((x) => x.channel === `conv:${sid}` && x.tokens_so_far >= 3);
  });
  assert.equal(g.user, `alice-${RUN}`);
  assert.ok(g.age_ms >= 0 && g.age_ms < 60000, `age ${g.age_ms}`);
  assert.ok(g.streamed_bytes > 0);
  assert.ok(g.text_tail.length > 0);
  assert.equal(g.stop_requested, false);
  assert.ok('upstream' in g);
  // the overview has it too, and counts it as running
  const o = await api('GET', '/api/admin/overview', ADMIN);
  assert.ok(o.json.generations.some((x) => x.job_id === g.job_id));
  assert.ok(o.json.stats.generations.running >= 1);
  // a bad id, an unknown job
  for (const bad of ['abc', '0', '+5', '12x', '1234567890123456789'])
    assert.equal((await api('POST', `/api/admin/generations/${bad}/stop`, ADMIN)).status, 400, bad);
  assert.equal((await api('POST', '/api/admin/generations/999999999/stop', ADMIN)).status, 404);
  // stop it
  const s = await api('POST', `/api/admin/generations/${g.job_id}/stop`, ADMIN);
  assert.equal(s.status, 202, s.text);
  assert.equal(s.json.job_id, g.job_id);
  const q = await eventually('the upstream request ended', async () => (await fakeRequests(tag)).at(-1)?.ended_at ? (await fakeRequests(tag)).at(-1) : null, 3000);
  assert.equal(q.closed_by_client, true, 'Parley closed the upstream connection');
  const end = (await ws.until(has('stream_end'))).find((m) => m.type === 'stream_end');
  assert.equal(end.metadata.stopped, true);
  await eventually('the generation gone from the list', async () => {
    const r = await api('GET', '/api/admin/generations', ADMIN);
    return !r.json.generations.some((x) => x.job_id === g.job_id);
  });
  const again = await api('POST', `/api/admin/generations/${g.job_id}/stop`, ADMIN);
  assert.equal(again.status, 409, again.text);
  const after = await api('GET', '/api/admin/overview', ADMIN);
  assert.ok(after.json.stats.generations.stopped >= 1);
  ws.ws.close();
});

test('open connections: a WebSocket client and a long-poll client are counted, and leave the counts', async () => {
  const totals = async () => (await api('GET', '/api/admin/connections', ADMIN)).json.totals;
  // the baseline: counts every process reported after the earlier tests'
  // clients had closed (a row is up to PRESENCE_EVERY_MS old)
  await sleep(300);
  const t0 = Date.now();
  const base = await eventually('every process reporting after the earlier clients closed', async () => {
    const c = (await api('GET', '/api/admin/connections', ADMIN)).json;
    const ws = c.processes.filter((p) => p.program === 'parley-ws');    // the WebSocket counts' source
    const fresh = ws.length >= 1 && ws.every((p) => p.updated_at > t0);
    return fresh ? c.totals : null;
  });
  const ws = await connect(`${WS}/ws/conn-${RUN}?token=${ALICE}`);
  await ws.until(has('connected'));
  const open = await api('POST', '/api/poll/open', ALICE, { path: `/ws/conn-lp-${RUN}` });
  assert.equal(open.status, 200, open.text);
  const sid = open.json.sid;
  const seen = await eventually('the WebSocket and the long-poll session counted', async () => {
    const t = await totals();
    return t.websocket >= base.websocket + 1 && t.longpoll >= base.longpoll + 1 ? t : null;
  });
  assert.ok(seen.websocket >= 1 && seen.longpoll >= 1);
  ws.ws.close();
  const del = await api('DELETE', `/api/poll/${sid}`, ALICE);
  assert.ok(del.status === 200 || del.status === 204, del.text);
  await eventually('both gone from the counts', async () => {
    const t = await totals();
    return t.websocket <= base.websocket && t.longpoll <= base.longpoll;
  });
});

test('open connections: a Phoenix socket and an SSE stream are counted, and leave the counts', async () => {
  const totals = async () => (await api('GET', '/api/admin/connections', ADMIN)).json.totals;
  await sleep(300);
  const t0 = Date.now();
  const base = await eventually('every process reporting after the earlier clients closed', async () => {
    const c = (await api('GET', '/api/admin/connections', ADMIN)).json;
    const ws = c.processes.filter((p) => p.program === 'parley-ws');
    return ws.length >= 1 && ws.every((p) => p.updated_at > t0) ? c.totals : null;
  });
  // a Phoenix socket (the bridge)
  const phx = new WebSocket(`${WS}/socket/websocket?vsn=2.0.0&auth_token=${ALICE}`);
  await new Promise((res, rej) => { phx.once('open', res); phx.once('error', rej); });
  // an SSE stream: a ticket's stream following a slow generation
  const ticket = `ADM-SSE-${RUN}`;
  const tag = `admin-${RUN}-sse`;
  const wsT = await connect(`${WS}/api/websocket/chat/${ticket}?token=${ALICE}`);
  wsT.ws.send(JSON.stringify({ ticketBody: `${tag} ${SLOWLY}` }));
  await wsT.until((m) => m.filter((x) => x.type === 'stream').length >= 2);
  const ctl = new AbortController();
  const res = await fetch(`${BASE}/api/tickets/${ticket}/ai/stream`, {
    headers: { authorization: `Bearer ${ALICE}` }, signal: ctl.signal });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  await reader.read();                          // the stream is flowing
  const seen = await eventually('the Phoenix socket and the SSE stream counted', async () => {
    const t = await totals();
    return t.phoenix_websocket >= base.phoenix_websocket + 1 && t.sse >= base.sse + 1 ? t : null;
  });
  assert.ok(seen.phoenix_websocket >= 1 && seen.sse >= 1);
  // end both; the generation too (the admin's stop)
  phx.close();
  ctl.abort();
  const g = (await api('GET', '/api/admin/generations', ADMIN)).json.generations
    .find((x) => x.channel.startsWith(`ticket:${ticket}`));
  if (g) assert.equal((await api('POST', `/api/admin/generations/${g.job_id}/stop`, ADMIN)).status, 202);
  await wsT.until((m) => m.some((x) => x.type === 'done'));
  wsT.ws.close();
  await eventually('both gone from the counts', async () => {
    const t = await totals();
    return t.phoenix_websocket <= base.phoenix_websocket && t.sse <= base.sse;
  });
});
