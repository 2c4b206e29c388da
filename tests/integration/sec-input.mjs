// sec-input.mjs — hostile input through a real web server (issue 13 item
// 3), run by tests/integration/t0960-sec-input.sh: lighttpd + parley.fcgi
// (PARLEY_BASE; the WebSocket paths proxied to parley-ws), JWT on
// (PARLEY_JWT_SECRET), the SQLite database at PARLEY_DB_PATH or the
// PostgreSQL one at PARLEY_PG_URL (t0961; reads: sec-input-db.mjs).
//
//   - SQL metacharacters (' " ; -- % _ \ "' OR 1=1 --" "'); DROP TABLE
//     messages; --") and NUL bytes (JSON \u0000, and raw where a transport
//     lets them through: a WebSocket text frame, %00 in a query, a header)
//     in every string field a client sends: seed 000 (ticket id, body),
//     seed 001 (content, metadata keys and values, session id, project_id,
//     client_version, User-Agent, X-Client-Version), seed 002 (brand,
//     message, conversation_id, user_id), seed 003 Phoenix (topic, query,
//     model, metadata, join params) over WebSocket and LongPoll, seed 004
//     (conversationId, content, and the session's title/metadata/settings/
//     project_id), long-poll (path, sid, cursor, wait), OpenAI (messages,
//     model, user), AI SDK (text, UI message id, chat id), export, query
//     parameters of every GET route (as a user and as an admin). Each is
//     either stored and read back
//     byte-exact (REST history, or the database for tickets) or refused
//     with the documented error (bad_input / not_found / the protocol's
//     error frame); never a 500, never a value cut at a NUL, and a canary
//     user's rows, the catalogue and the schema are untouched.
//   - 10 MB bodies on every POST route, a 10 MB WebSocket frame and Phoenix
//     frame: 413 / close 1009, nothing stored, the servers alive.
//   - NDJSON batches of 100,000 lines on both long-poll transports.
//   - metadata wherever a client may send it: session metadata/settings of
//     1 MB and 9 KB, message metadata (seed 001 WebSocket and long-poll,
//     Phoenix WebSocket and LongPoll), what a seed 001 connection records
//     (User-Agent, client_version), the AI SDK's UI message id: bounded.
//
// Every case works as its own users; the cases run concurrently (each
// test awaits work started when the file loads) to stay within the time
// budget.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { connect as netConnect } from 'node:net';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket from 'ws';
import { connect, jwtHS256, SLOW } from '../node/clients.mjs';
import { httpCall } from './sec-input-http.mjs';
import { consistency, hex, hexOf, idOnly, lit, sql, tablesQuery } from './sec-input-db.mjs';

const BASE = process.env.PARLEY_BASE;
const SECRET = process.env.PARLEY_JWT_SECRET;
if (!BASE || !SECRET) throw new Error('PARLEY_BASE, PARLEY_JWT_SECRET');
const WSB = BASE.replace(/^http/, 'ws');
const URLB = new URL(BASE);
const RUN = `${process.pid}${Date.now().toString(36)}`;
const FAST = '[[fake tokens=1 token_ms=0]]';

const META = ["'", '"', ';', '--', '%', '_', '\\', "' OR 1=1 --", "'); DROP TABLE messages; --"];
const ALL = META.join(' ');
const NUL = 'nul\u0000after';
const user = (who) => `${who}-${RUN}`;
// an id of A-Z a-z 0-9 . _ - (1 to 63 characters): what ids may hold
const validId = (s) => /^[A-Za-z0-9._-]{1,63}$/.test(s);
const tok = (who) => jwtHS256(SECRET, user(who));

// ---- helpers ---------------------------------------------------------------

// A REST call: { status, type, text, json }.
async function http(method, path, { token, headers = {}, json, body } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  if (json !== undefined) { h['Content-Type'] = 'application/json'; body = JSON.stringify(json); }
  return httpCall(new URL(`${BASE}${path}`), { method, headers: h, body, timeoutMs: 60000 * SLOW });
}

// A refusal with the REST error shape and code (and HTTP status).
function refused(r, status, code, what) {
  assert.equal(r.status, status, `${what}: ${r.status} ${r.text.slice(0, 300)}`);
  assert.equal(r.json?.success, false, `${what}: ${r.text.slice(0, 300)}`);
  if (code) assert.equal(r.json.code, code, `${what}: ${r.text.slice(0, 300)}`);
}
const not500 = (r, what) => assert.ok(r.status < 500, `${what}: ${r.status} ${r.text.slice(0, 300)}`);

// Waits for a frame matching pred among c.msgs (clients.mjs connect()).
const until = (c, pred, ms = 20000) => c.until((m) => m.some(pred), ms * SLOW);
const endOf = (type) => (m) => m.type === type || m.type === 'error';

// Opens seed 001 on /ws/<sid>, sends each frame, waiting for its end
// (stream_end or error) before the next. Resolves with the end frames.
async function s001(sid, token, frames, { query = '', headers } = {}) {
  const c = await connect(`${WSB}/ws/${sid}?token=${token}${query}`, headers ? { headers } : {});
  try {
    await until(c, (m) => m.type === 'connected' || m.type === 'error');
    const ends = [];
    for (const f of frames) {
      const before = c.msgs.length;
      c.ws.send(typeof f === 'string' ? f : JSON.stringify(f));
      await c.until((m) => m.slice(before).some(endOf('stream_end')), 20000 * SLOW);
      ends.push(c.msgs.slice(before).find(endOf('stream_end')));
    }
    return { ends, msgs: c.msgs };
  } finally { c.ws.close(); }
}

async function historyOf(id, token) {
  const r = await http('GET', `/api/chat/sessions/${encodeURIComponent(id)}/messages?limit=200`, { token });
  assert.equal(r.status, 200, r.text);
  return r.json.messages;
}
async function sessionOf(id, token) {
  const r = await http('GET', `/api/chat/sessions/${encodeURIComponent(id)}`, { token });
  assert.equal(r.status, 200, r.text);
  return r.json;
}
// Messages stored for conversations of a user (the database).
const userMsgs = (u) => Number(sql(`SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE c.owner = ${lit(u)}`));
const userConvs = (u) => Number(sql(`SELECT count(*) FROM conversations WHERE owner = ${lit(u)}`));

// Runs fn at load time; the test awaits its outcome (the cases overlap).
// SEC_CASES=name,name (debugging) runs only those cases (the others pass).
const ONLY = process.env.SEC_CASES ? process.env.SEC_CASES.split(',') : null;
function early(name, fn) {
  const t0 = Date.now();
  const p = !ONLY || ONLY.includes(name) || name === 'canary' ? fn() : Promise.resolve();
  p.then(() => process.stderr.write(`# ${name}: ${Date.now() - t0} ms\n`), () => {});
  return p;
}

// ---- the canary: rows nobody here may change ----------------------------------

const CANARY = 'canary';
function canarySnapshot() {
  const h = createHash('sha256');
  h.update(sql(`SELECT id, kind, title, status, settings, metadata FROM conversations WHERE owner = ${lit(user(CANARY))} ORDER BY id`));
  h.update(sql(`SELECT m.id, m.role, ${hexOf('m.content')}, m.metadata FROM messages m JOIN conversations c ON c.id = m.conversation_id WHERE c.owner = ${lit(user(CANARY))} ORDER BY m.id`));
  h.update(sql('SELECT id, name FROM brands ORDER BY id'));
  h.update(sql('SELECT count(*) FROM products'));
  h.update(sql(tablesQuery));
  return h.digest('hex');
}
const canaryReady = early('canary', async () => {
  const t = tok(CANARY);
  const c = await http('POST', '/api/chat/sessions', { token: t, json: { kind: 'chat', title: 'canary', metadata: { keep: 'me' } } });
  assert.equal(c.status, 201, c.text);
  const { ends } = await s001(c.json.id, t, [{ type: 'message', content: `canary question ${FAST}`, metadata: { c: 1 } }]);
  assert.equal(ends[0].type, 'stream_end', JSON.stringify(ends));
  const tables = sql(tablesQuery).split('\n');
  for (const n of ['messages', 'conversations', 'tickets', 'brands', 'products', 'poll_sessions', 'rate_hits'])
    assert.ok(tables.includes(n), `table ${n}: ${tables}`);
  return { snap: canarySnapshot(), msgs: userMsgs(user(CANARY)) };
});

// ---- 1. SQL metacharacters and NUL bytes -------------------------------------

// seed 001 over WebSocket: content and metadata (keys and values) stored
// byte-exact; a NUL (JSON \u0000 or raw) is refused with bad_input and
// nothing is stored.
const s001Content = early('s001Content', async () => {
  await canaryReady;
  const who = 'meta001';
  const t = tok(who);
  const sid = `sec-${RUN}-001`;
  const vals = [...META, ALL];
  const frames = vals.map((v, i) => ({ type: 'message', content: `${v} ${FAST}`, metadata: { [v]: v, i } }));
  const { ends } = await s001(sid, t, frames);
  ends.forEach((e, i) => assert.equal(e.type, 'stream_end', `${JSON.stringify(vals[i])}: ${JSON.stringify(e)}`));
  const hist = (await historyOf(sid, t)).filter((m) => m.role === 'user');
  assert.deepEqual(hist.map((m) => m.content), vals.map((v) => `${v} ${FAST}`));
  hist.forEach((m, i) => assert.equal(m.metadata[vals[i]], vals[i], JSON.stringify(m.metadata)));
  const stored = userMsgs(user(who));
  // NUL: as JSON \u0000 in content, in a metadata value and key; raw inside
  // the string; raw after a complete frame (must not be cut there and run)
  const bad = [
    JSON.stringify({ type: 'message', content: NUL }),
    JSON.stringify({ type: 'message', content: 'x', metadata: { k: NUL } }),
    JSON.stringify({ type: 'message', content: 'x', metadata: { [NUL]: 1 } }),
    `{"type":"message","content":"raw\u0000nul ${FAST}"}`,
    `{"type":"message","content":"after ${FAST}"}\u0000{"type":"message","content":"x"}`,
  ];
  const r = await s001(sid, t, bad);
  r.ends.forEach((e, i) => {
    assert.equal(e.type, 'error', `frame ${i} ${JSON.stringify(bad[i])} was taken: ${JSON.stringify(e)}`);
    assert.equal(e.code, 'bad_input', JSON.stringify(e));
  });
  assert.equal(userMsgs(user(who)), stored, 'a refused frame stored something');
});
test('seed 001 WebSocket: metacharacters in content and metadata keys/values stored byte-exact; NUL (JSON and raw) refused with bad_input, nothing stored', () => s001Content);

// seed 001's session id, project_id, client_version (query and header)
// and User-Agent.
const s001Session = early('s001Session', async () => {
  await canaryReady;
  const t = tok('sess001');
  // session ids and project ids are restricted to A-Z a-z 0-9 . _ -: an id
  // holding a metacharacter is refused (never a 500), one made of allowed
  // characters only ("--", "_") is an ordinary id
  let valid = 0;
  const ids = [...META, ALL, NUL].map((v, i) => [v, `s${i}${RUN}${v}`]);
  await Promise.all(ids.map(async ([v, id]) => {
    const c = await connect(`${WSB}/ws/${encodeURIComponent(id)}?token=${t}`).catch((e) => e);
    if (c instanceof Error) {
      assert.ok(!validId(id), `session id ${JSON.stringify(id)}: ${c.message}`);
      assert.ok(c.status === undefined || c.status < 500, `session id ${JSON.stringify(id)}: ${c.message}`);
      return;
    }
    await Promise.race([c.closed, until(c, () => true, 10000).catch(() => null)]);
    c.ws.close();
    if (validId(id)) {
      valid++;
      assert.ok(c.msgs.some((m) => m.type === 'connected'), `${JSON.stringify(id)}: ${JSON.stringify(c.msgs)}`);
    } else {
      assert.ok(c.msgs.every((m) => m.type !== 'connected'), `session id ${JSON.stringify(id)} taken: ${JSON.stringify(c.msgs)}`);
      const e = c.msgs.find((m) => m.type === 'error');
      if (e) assert.equal(e.code, 'bad_input', JSON.stringify(e));
    }
  }));
  await Promise.all([...META, ALL, NUL].map(async (v, i) => {
    const c = await connect(`${WSB}/ws/sec-${RUN}-pj${i}?token=${t}&project_id=${encodeURIComponent(v)}`).catch((e) => e);
    if (c instanceof Error) {
      assert.ok(!validId(v) && (c.status === undefined || c.status < 500), `project_id ${JSON.stringify(v)}: ${c.message}`);
      return;
    }
    await Promise.race([c.closed, until(c, () => true, 10000).catch(() => null)]);
    c.ws.close();
    if (validId(v)) {
      valid++;
      assert.ok(c.msgs.some((m) => m.type === 'connected'), JSON.stringify(c.msgs));
      assert.equal((await sessionOf(`sec-${RUN}-pj${i}`, t)).project_id, v);
      return;
    }
    const err = c.msgs.find((m) => m.type === 'error');
    assert.ok(!c.msgs.some((m) => m.type === 'connected'), `project_id ${JSON.stringify(v)} taken: ${JSON.stringify(c.msgs)}`);
    if (err) assert.equal(err.code, 'bad_input', JSON.stringify(err));
  }));
  assert.equal(userConvs(user('sess001')), valid, 'a refused session id or project_id created a session');
  // client_version (query), X-Client-Version and User-Agent: stored exact
  const out = [];
  await Promise.all([...META, ALL].map(async (v, i) => {
    const q = `sec-${RUN}-q${i}`;
    await s001(q, t, [], { query: `&client_version=${encodeURIComponent(v)}` });
    out.push([q, 'client_version', v]);
    const h = `sec-${RUN}-h${i}`;
    await s001(h, t, [], { headers: { 'User-Agent': v, 'X-Client-Version': v } });
    out.push([h, 'user_agent', v], [h, 'client_version', v]);
  }));
  for (const [id, k, v] of out) {
    const s = await sessionOf(id, t);
    assert.equal(s.metadata[k], v, `${id} ${k}: ${JSON.stringify(s.metadata)}`);
  }
  // a NUL in client_version (%00 in the query): stored whole or refused,
  // never cut at the NUL
  const nq = `sec-${RUN}-qnul`;
  const c = await connect(`${WSB}/ws/${nq}?token=${t}&client_version=${encodeURIComponent(NUL)}`).catch((e) => e);
  if (!(c instanceof Error)) {
    await Promise.race([c.closed, until(c, () => true, 5000).catch(() => null)]);
    c.ws.close();
  } else {
    assert.ok(c.status === undefined || c.status < 500, c.message);
  }
  const s = await http('GET', `/api/chat/sessions/${nq}`, { token: t });
  if (s.status === 200) {
    const cv = s.json.metadata.client_version;
    assert.ok(cv === undefined || cv === null || cv === NUL, `client_version cut at the NUL: ${JSON.stringify(cv)}`);
  } else {
    assert.equal(s.status, 404, s.text);
  }
});
test('seed 001: metacharacters in the session id and project_id refused (never 500); in client_version, X-Client-Version and User-Agent stored byte-exact; a %00 never cuts client_version', () => s001Session);

// A raw NUL inside a header: the web server refuses the request, or the
// value is stored whole — never cut at the NUL.
async function rawRequest(text) {
  return new Promise((resolve) => {
    const s = netConnect(Number(URLB.port), URLB.hostname);
    let out = '';
    s.setTimeout(10000 * SLOW, () => s.destroy());
    s.on('data', (d) => { out += d.toString('latin1'); });
    s.on('close', () => resolve(out));
    s.on('error', () => resolve(out));
    s.write(Buffer.from(text, 'latin1'));
  });
}
const rawHeaders = early('rawHeaders', async () => {
  await canaryReady;
  const t = tok('hdr');
  const id = `sec-${RUN}-rawua`;
  const key = Buffer.from(`k${RUN}`.padEnd(16, 'x').slice(0, 16)).toString('base64');
  const res = await rawRequest(`GET /ws/${id}?token=${t} HTTP/1.1\r\nHost: ${URLB.host}\r\n` +
    `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n` +
    `User-Agent: ua\u0000cut\r\nX-Client-Version: cv\u0000cut\r\n\r\n`);
  const status = Number((res.match(/^HTTP\/1\.[01] (\d{3})/) || [])[1]);
  assert.ok(status > 0 && status < 500, `raw NUL in headers: ${res.slice(0, 200)}`);
  const s = await http('GET', `/api/chat/sessions/${id}`, { token: t });
  if (s.status === 200) {
    for (const k of ['user_agent', 'client_version']) {
      const v = s.json.metadata[k];
      assert.ok(v === undefined || v === null || v.includes('cut'), `${k} cut at the NUL: ${JSON.stringify(v)}`);
    }
  } else {
    assert.equal(s.status, 404, s.text);
  }
  // the same for a long-poll open
  const lp = await rawRequest(`POST /api/poll/open HTTP/1.1\r\nHost: ${URLB.host}\r\nAuthorization: Bearer ${t}\r\n` +
    `Content-Type: application/json\r\nUser-Agent: ua\u0000cut\r\nConnection: close\r\nContent-Length: 30\r\n\r\n` +
    `{"path": "/ws/sec-${RUN}-rl"}`.padEnd(30, ' '));
  const ls = Number((lp.match(/^HTTP\/1\.[01] (\d{3})/) || [])[1]);
  assert.ok(ls > 0 && ls < 500, `raw NUL in a long-poll header: ${lp.slice(0, 200)}`);
});
test('a raw NUL inside User-Agent / X-Client-Version (WebSocket upgrade, long-poll open): refused or kept whole, never a 500', () => rawHeaders);

// seed 001 over long-poll: the same content through /api/poll, and the
// long-poll transport's own fields (path, sid, cursor, wait).
async function pollOpen(token, path) {
  const r = await http('POST', '/api/poll/open', { token, json: { path } });
  return r;
}
async function pollUntil(token, sid, pred, ms = 20000 * SLOW) {
  let cursor = 0;
  const msgs = [];
  const t0 = Date.now();
  while (!pred(msgs)) {
    assert.ok(Date.now() - t0 < ms, `long-poll timeout: ${JSON.stringify(msgs).slice(0, 1000)}`);
    const r = await http('GET', `/api/poll/${sid}?cursor=${cursor}&wait=2`, { token });
    assert.equal(r.status, 200, r.text);
    msgs.push(...r.json.messages);
    cursor = r.json.cursor;
  }
  return msgs;
}
const pollFields = early('pollFields', async () => {
  await canaryReady;
  const who = 'poll';
  const t = tok(who);
  const sid001 = `sec-${RUN}-lp`;
  const o = await pollOpen(t, `/ws/${sid001}`);
  assert.equal(o.status, 200, o.text);
  const vals = [...META, ALL];
  const body = vals.map((v) => JSON.stringify({ type: 'message', content: `${v} ${FAST}`, metadata: { v } })).join('\n');
  // one at a time (the queue holds 5): each answered before the next
  let cursor = 0;
  for (const line of body.split('\n')) {
    const p = await http('POST', `/api/poll/${o.json.sid}`, { token: t, body: line, headers: { 'Content-Type': 'application/x-ndjson' } });
    assert.equal(p.status, 202, p.text);
    const t0 = Date.now();
    for (let end = null; !end;) {
      assert.ok(Date.now() - t0 < 20000 * SLOW, 'long-poll: no stream_end');
      const g = await http('GET', `/api/poll/${o.json.sid}?cursor=${cursor}&wait=5`, { token: t });
      assert.equal(g.status, 200, g.text);
      cursor = g.json.cursor;
      end = g.json.messages.find((m) => m.type === 'stream_end' || m.type === 'error');
      if (end) assert.equal(end.type, 'stream_end', JSON.stringify(end));
    }
  }
  const hist = (await historyOf(sid001, t)).filter((m) => m.role === 'user');
  assert.deepEqual(hist.map((m) => m.content), vals.map((v) => `${v} ${FAST}`));
  hist.forEach((m, i) => assert.equal(m.metadata.v, vals[i]));
  // NUL over long-poll: JSON \u0000 and raw, in a one-frame body and in
  // NDJSON; each is the protocol's bad_input error frame, nothing stored
  const stored = userMsgs(user(who));
  const o2 = await pollOpen(t, `/ws/${sid001}`);
  assert.equal(o2.status, 200, o2.text);
  for (const b of [JSON.stringify({ type: 'message', content: NUL }),
    `{"type":"message","content":"raw\u0000nul"}`,
    `{"type":"message","content":"a ${FAST}"}\u0000junk`]) {
    const p = await http('POST', `/api/poll/${o2.json.sid}`, { token: t, body: b });
    not500(p, JSON.stringify(b));
  }
  const errs = await pollUntil(t, o2.json.sid, (m) => m.filter((x) => x.type === 'error').length >= 3);
  assert.ok(errs.filter((x) => x.type === 'error').every((e) => e.code === 'bad_input'), JSON.stringify(errs));
  await sleep(300);
  assert.equal(userMsgs(user(who)), stored, 'a NUL frame stored something');
  // the transport's own fields: path, sid, cursor, wait
  for (const v of [...META, ALL, NUL]) {
    for (const path of [v, `/ws/${v}`, `/ws/chat/${v}`, `/api/websocket/chat/${v}`]) {
      const r = await pollOpen(t, path);
      not500(r, `path ${JSON.stringify(path)}`);
      if (r.status !== 200) assert.equal(r.json?.success, false, r.text);
      else await http('DELETE', `/api/poll/${r.json.sid}`, { token: t });
    }
    const e = encodeURIComponent(v);
    for (const [m, p] of [['GET', `/api/poll/${e}?cursor=0&wait=0`], ['POST', `/api/poll/${e}`], ['DELETE', `/api/poll/${e}`],
      ['GET', `/api/poll/${o2.json.sid}?cursor=${e}&wait=0`], ['GET', `/api/poll/${o2.json.sid}?cursor=0&wait=${e}`]]) {
      const r = await http(m, p, { token: t, body: m === 'POST' ? '{"type":"ping"}' : undefined });
      not500(r, `${m} ${p}`);
      assert.ok([200, 400, 404, 410].includes(r.status), `${m} ${p}: ${r.status} ${r.text}`);
    }
  }
  assert.equal(userMsgs(user(who)), stored);
});
test('long-poll: metacharacters in seed 001 frames stored byte-exact; NUL refused (bad_input frames, nothing stored); in path, sid, cursor and wait: 400/404/410, never 500', () => pollFields);

// seed 000: the ticket id (restricted) and the ticket body (stored in
// tickets.body: read back from the database, there is no REST for it).
async function s000(tid, token, body) {
  const c = await connect(`${WSB}/api/websocket/chat/${tid}?token=${token}`).catch((e) => e);
  if (c instanceof Error) return { http: c.status, msgs: [] };
  try {
    c.ws.send(typeof body === 'string' ? body : JSON.stringify(body));
    await Promise.race([c.closed, c.until((m) => m.some((x) => ['done', 'cached', 'error'].includes(x.type)), 20000 * SLOW)]);
    return { msgs: c.msgs, close: c.closeInfo };
  } finally { c.ws.close(); }
}
const s000Fields = early('s000Fields', async () => {
  await canaryReady;
  const t = tok('ticket');
  const tickets0 = Number(sql('SELECT count(*) FROM tickets'));
  const vals = [...META, ALL];
  const res = await Promise.all(vals.map((v, i) => s000(`sec-${RUN}-t${i}`, t, { ticketBody: `${v} ${FAST}` })));
  res.forEach((r, i) => assert.ok(r.msgs.some((m) => m.type === 'done'), `${JSON.stringify(vals[i])}: ${JSON.stringify(r.msgs)}`));
  vals.forEach((v, i) => assert.equal(sql(`SELECT ${hexOf('body')} FROM tickets WHERE id = 'sec-${RUN}-t${i}'`), hex(`${v} ${FAST}`),
    `ticket body ${JSON.stringify(v)} not stored byte-exact`));
  // NUL in the body (JSON and raw): bad_input, no ticket
  for (const [i, b] of [JSON.stringify({ ticketBody: NUL }), `{"ticketBody":"raw\u0000nul"}`,
    `{"ticketBody":"a ${FAST}"}\u0000junk`].entries()) {
    const r = await s000(`sec-${RUN}-tn${i}`, t, b);
    const e = r.msgs.find((m) => m.type === 'error');
    assert.ok(e, `NUL body ${i} taken: ${JSON.stringify(r.msgs)}`);
    assert.equal(e.code, 'bad_input', JSON.stringify(e));
    assert.equal(sql(`SELECT count(*) FROM tickets WHERE id = 'sec-${RUN}-tn${i}'`), '0');
  }
  // the ticket id: one holding a metacharacter or NUL is refused (a
  // bad_input frame or an HTTP refusal) and stores no row; one of allowed
  // characters only ("--", "_") is an ordinary ticket
  await Promise.all([...META, ALL, NUL].map(async (v, i) => {
    const id = `t${i}${RUN}${v}`;
    const r = await s000(encodeURIComponent(id), t, { ticketBody: `x ${FAST}` });
    if (r.http !== undefined) {
      assert.ok(!validId(id) && r.http < 500, `ticket id ${JSON.stringify(id)}: HTTP ${r.http}`);
      return;
    }
    if (validId(id)) {
      assert.ok(r.msgs.some((m) => m.type === 'done' || m.type === 'cached'), `${JSON.stringify(id)}: ${JSON.stringify(r.msgs)}`);
      return;
    }
    const e = r.msgs.find((m) => m.type === 'error');
    assert.ok(e, `ticket id ${JSON.stringify(id)} taken: ${JSON.stringify(r.msgs)}`);
    assert.equal(e.code, 'bad_input', JSON.stringify(e));
  }));
  // REST routes of a ticket with such an id: 400/404, never 500
  for (const v of [...META, ALL, NUL]) {
    for (const [m, p] of [['GET', 'ai'], ['DELETE', 'ai'], ['POST', 'ai/stop']]) {
      const r = await http(m, `/api/tickets/${encodeURIComponent(v)}/${p}`, { token: t });
      not500(r, `${m} ticket ${JSON.stringify(v)}`);
    }
  }
  assert.equal(Number(sql('SELECT count(*) FROM tickets')) - tickets0 >= vals.length, true);
  // one statement: tickets other tests of this file create meanwhile cannot
  // fall between two counts
  const bad = sql(`SELECT count(*) FROM tickets WHERE NOT (${idOnly('id')})`);
  assert.equal(bad, '0', `a ticket with an invalid id was stored: ${bad === '0' ? '' : sql(`SELECT ${hexOf('id')} FROM tickets WHERE NOT (${idOnly('id')})`)}`);
});
test('seed 000: metacharacters in ticketBody stored byte-exact (tickets.body); NUL refused with bad_input, no row; metacharacters or NUL in the ticket id refused, never 500', () => s000Fields);

// seed 002: the brand (path), message, conversation_id and user_id.
async function s002(brand, token, frames) {
  const c = await connect(`${WSB}/ws/chat/${brand}?token=${token}`).catch((e) => e);
  if (c instanceof Error) return { http: c.status, msgs: [], ends: [] };
  try {
    await Promise.race([c.closed, until(c, (m) => m.type === 'welcome' || m.type === 'error')]);
    const ends = [];
    for (const f of frames) {
      const before = c.msgs.length;
      c.ws.send(typeof f === 'string' ? f : JSON.stringify(f));
      await c.until((m) => m.slice(before).some(endOf('complete')), 20000 * SLOW);
      ends.push(c.msgs.slice(before).find(endOf('complete')));
    }
    return { msgs: c.msgs, ends, close: c.closeInfo };
  } finally { c.ws.close(); }
}
const s002Fields = early('s002Fields', async () => {
  await canaryReady;
  const who = 'brand';
  const t = tok(who);
  const vals = [...META, ALL];
  const frames = vals.map((v) => ({ type: 'chat', data: { message: `${v} ${FAST}`, conversation_id: null, user_id: v, voice: false } }));
  const r = await s002('techpro', t, frames);
  r.ends.forEach((e, i) => assert.equal(e.type, 'complete', `${JSON.stringify(vals[i])}: ${JSON.stringify(e)}`));
  const convs = r.ends.map((e) => e.data?.conversation_id).filter(Boolean);
  assert.ok(convs.length >= 1, JSON.stringify(r.ends[0]));
  const stored = [];
  for (const id of new Set(convs)) stored.push(...(await historyOf(id, t)).filter((m) => m.role === 'user').map((m) => m.content));
  assert.deepEqual(stored.sort(), vals.map((v) => `${v} ${FAST}`).sort());
  // conversation_id: an unknown or malformed one is refused or starts a new
  // conversation — never a 500, never another user's rows
  const n0 = userMsgs(user(who));
  const r2 = await s002('techpro', t, [...META, ALL, NUL].map((v) => ({ type: 'chat', data: { message: `c ${FAST}`, conversation_id: v } })));
  r2.ends.forEach((e) => assert.ok(e.type === 'complete' || ['bad_input', 'not_found'].includes(e.data?.code), JSON.stringify(e)));
  // NUL in message and user_id: bad_input, nothing stored
  const n1 = userMsgs(user(who));
  assert.ok(n1 >= n0);
  const r3 = await s002('techpro', t, [{ type: 'chat', data: { message: NUL } }, { type: 'chat', data: { message: 'x', user_id: NUL } },
    `{"type":"chat","data":{"message":"raw\u0000nul"}}`]);
  r3.ends.forEach((e) => {
    if (e.type === 'complete') return;     // user_id is not stored: may be ignored
    assert.equal(e.data?.code, 'bad_input', JSON.stringify(e));
  });
  assert.equal(r3.ends[0].type, 'error', JSON.stringify(r3.ends[0]));
  assert.equal(r3.ends[2].type, 'error', JSON.stringify(r3.ends[2]));
  const n2 = userMsgs(user(who));
  assert.ok(n2 <= n1 + 2, `refused frames stored messages: ${n1} -> ${n2}`);
  // the brand: an unknown or malformed brand is refused, never 500
  for (const v of [...META, ALL, NUL]) {
    const b = await s002(encodeURIComponent(v), t, []);
    if (b.http !== undefined) { assert.ok(b.http < 500, `brand ${JSON.stringify(v)}: HTTP ${b.http}`); continue; }
    assert.ok(!b.msgs.some((m) => m.type === 'welcome'), `brand ${JSON.stringify(v)} welcomed: ${JSON.stringify(b.msgs)}`);
  }
  for (const v of [...META, ALL, NUL]) {
    const e = encodeURIComponent(v);
    for (const p of [`/brands/${e}`, `/brands/${e}/products`, `/brands/active?x=${e}`]) not500(await http('GET', p, { token: t }), p);
  }
});
test('seed 002: metacharacters in data.message stored byte-exact, in user_id/conversation_id never a 500; NUL refused with bad_input; a brand id with metacharacters or NUL refused', () => s002Fields);

// seed 003 (Phoenix) over WebSocket and LongPoll.
function phxFrames(c) { return c.msgs; }
const phxWs = early('phxWs', async () => {
  await canaryReady;
  const who = 'phx';
  const t = tok(who);
  const c = await connect(`${WSB}/socket/websocket?vsn=2.0.0&auth_token=${t}`);
  try {
    let ref = 0;
    const push = async (topic, event, payload, raw) => {
      const r = String(++ref);
      c.ws.send(raw ?? JSON.stringify(['1', r, topic, event, payload]));
      await c.until((m) => m.some((f) => Array.isArray(f) && f[1] === r && f[3] === 'phx_reply'), 20000 * SLOW);
      return c.msgs.find((f) => Array.isArray(f) && f[1] === r && f[3] === 'phx_reply');
    };
    // A frame with a NUL (docs/protocol-phoenix.md, malformed frames): a
    // \u0000 in a string is answered with bad_input when its ref and topic
    // can be read (and hold no NUL); a raw NUL byte or a NUL in the topic
    // leaves nothing to answer to: dropped. Either way a heartbeat sent
    // after it is answered and nothing is stored. The heartbeat is written
    // "heart\u0062eat": the bridge answers a plain one at once, ahead of
    // the frames before it (docs/ws-bridge.md), an escaped one in order
    // after them, so its reply proves the frame before it was handled.
    let hb = 0;
    const afterHb = async (raw) => {
      const h = `hb${++hb}`;
      c.ws.send(raw);
      c.ws.send(`[null,"${h}","phoenix","heart\\u0062eat",{}]`);
      await c.until((m) => m.some((f) => f[1] === h && f[3] === 'phx_reply'), 20000 * SLOW);
    };
    const dropped = async (raw, badRef) => {
      await afterHb(raw);
      assert.ok(!c.msgs.some((f) => f[1] === badRef), `the NUL frame was answered: ${JSON.stringify(c.msgs.filter((f) => f[1] === badRef))}`);
    };
    const malformed = async (raw, badRef) => {
      await afterHb(raw);
      const rep = c.msgs.filter((f) => f[1] === badRef);
      assert.equal(rep.length, 1, `the NUL frame ${badRef}: ${JSON.stringify(rep)}`);
      assert.equal(rep[0][3], 'phx_reply', JSON.stringify(rep));
      assert.deepEqual(rep[0][4], { status: 'error', response: { reason: 'malformed message', code: 'bad_input' } });
    };
    // topics with metacharacters: refused joins (bad_input); a session id
    // of allowed characters only ("--", "_") is an ordinary topic
    for (const [i, v] of [...META, ALL].entries()) {
      const id = `p${i}${RUN}${v}`;
      const rep = await push(`proxy:${id}`, 'phx_join', { user_id: v });
      if (validId(id)) {
        assert.equal(rep[4].status, 'ok', `topic ${JSON.stringify(id)}: ${JSON.stringify(rep)}`);
        continue;
      }
      assert.equal(rep[4].status, 'error', `topic ${JSON.stringify(id)} joined: ${JSON.stringify(rep)}`);
      assert.equal(rep[4].response.code, 'bad_input', JSON.stringify(rep));
    }
    await dropped(JSON.stringify(['1', 'nt', `proxy:p${RUN}${NUL}`, 'phx_join', {}]), 'nt');
    // join params with metacharacters: joined
    const topic = `proxy:sec-${RUN}-phx`;
    const j = await push(topic, 'phx_join', { user_id: ALL, [ALL]: ALL });
    assert.equal(j[4].status, 'ok', JSON.stringify(j));
    const vals = [...META, ALL];
    for (const v of vals) {
      const before = c.msgs.length;
      const rep = await push(topic, 'query', { query: `${v} ${FAST}`, metadata: { [v]: v } });
      assert.equal(rep[4].status, 'ok', `${JSON.stringify(v)}: ${JSON.stringify(rep)}`);
      await c.until((m) => m.slice(before).some((f) => f[3] === 'response' || f[3] === 'error'), 20000 * SLOW);
      const ev = c.msgs.slice(before).find((f) => f[3] === 'response' || f[3] === 'error');
      assert.equal(ev[3], 'response', JSON.stringify(ev));
    }
    const stored = userMsgs(user(who));
    // a model with metacharacters: invalid_model (bad_input), nothing stored
    for (const v of [...META, ALL]) {
      const rep = await push(topic, 'query', { query: `m ${FAST}`, model: v });
      assert.equal(rep[4].status, 'error', `model ${JSON.stringify(v)}: ${JSON.stringify(rep)}`);
      assert.equal(rep[4].response.error, 'invalid_model', JSON.stringify(rep));
      assert.equal(rep[4].response.code, 'bad_input', JSON.stringify(rep));
    }
    // NUL in query, model, metadata (JSON \u0000), raw in the query, and
    // raw after a complete frame: dropped, never cut at the NUL and run
    await malformed(JSON.stringify(['1', 'n1', topic, 'query', { query: NUL }]), 'n1');
    await malformed(JSON.stringify(['1', 'n2', topic, 'query', { query: 'x', model: NUL }]), 'n2');
    await malformed(JSON.stringify(['1', 'n3', topic, 'query', { query: 'x', metadata: { k: NUL } }]), 'n3');
    await dropped(`["1","n4","${topic}","query",{"query":"raw\u0000nul"}]`, 'n4');
    await dropped(`["1","n5","${topic}","query",{"query":"cut ${FAST}"}]\u0000junk`, 'n5');
    await sleep(300);
    assert.equal(userMsgs(user(who)), stored, 'a refused query was stored');
    await push(topic, 'get_history', {});
    await c.until((m) => m.some((f) => f[3] === 'history'), 10000 * SLOW);
    const h = c.msgs.filter((f) => f[3] === 'history').pop()[4].messages.filter((m) => m.role === 'user');
    assert.deepEqual(h.map((m) => m.content), vals.map((v) => `${v} ${FAST}`));
    const rest = (await historyOf(`sec-${RUN}-phx`, t)).filter((m) => m.role === 'user');
    rest.forEach((m, i) => assert.equal(m.metadata[vals[i]], vals[i], JSON.stringify(m.metadata)));
  } finally { c.ws.close(); }
});
test('Phoenix WebSocket: metacharacters in query, metadata and join params stored byte-exact; in the topic or model refused (bad_input); a \\u0000 in query, model or metadata answered bad_input, a raw NUL or one in the topic dropped; nothing stored', () => phxWs);

// Phoenix LongPoll: a topic and query with metacharacters, NUL in a POST.
async function lp(method, { token, auth, body, type } = {}) {
  const qs = new URLSearchParams({ vsn: '2.0.0' });
  if (auth) qs.set('auth_token', auth);
  if (token) qs.set('token', token);
  const r = await httpCall(new URL(`${BASE}/socket/longpoll?${qs}`), { method, body, headers: type ? { 'Content-Type': type } : {},
    timeoutMs: 60000 * SLOW });
  return { http: r.status, text: r.text, json: r.json };
}
async function lpCollect(auth, token, pred, ms = 20000 * SLOW) {
  const got = [];
  const t0 = Date.now();
  while (!pred(got)) {
    assert.ok(Date.now() - t0 < ms, `LongPoll timeout: ${JSON.stringify(got).slice(0, 1000)}`);
    const r = await lp('GET', { auth, token });
    assert.equal(r.http, 200, r.text);
    assert.ok([200, 204].includes(r.json.status), r.text);
    got.push(...r.json.messages.map((s) => JSON.parse(s)));
  }
  return got;
}
const phxLp = early('phxLp', async () => {
  await canaryReady;
  const who = 'phxlp';
  const t = tok(who);
  const first = await lp('GET', { auth: t });
  assert.equal(first.json.status, 410, first.text);
  const T = first.json.token;
  const topic = `proxy:sec-${RUN}-plp`;
  const frames = [JSON.stringify(['1', '1', topic, 'phx_join', { user_id: ALL }])];
  [...META, ALL].forEach((v, i) => frames.push(JSON.stringify(['1', String(10 + i), topic, 'stream_query', { query: `${v} ${FAST}`, metadata: { v } }])));
  // one query per POST: a topic streams one answer at a time (busy)
  let r = await lp('POST', { auth: t, token: T, body: frames[0], type: 'application/x-ndjson' });
  assert.equal(r.json?.status, 200, r.text);
  const got = await lpCollect(t, T, (g) => g.some((f) => f[1] === '1'));
  assert.equal(got.find((f) => f[1] === '1')[4].status, 'ok', JSON.stringify(got));
  for (let i = 1; i < frames.length; i++) {
    r = await lp('POST', { auth: t, token: T, body: frames[i], type: 'application/x-ndjson' });
    assert.equal(r.json?.status, 200, r.text);
    await lpCollect(t, T, (g) => g.some((f) => f[3] === 'stream_complete' || f[3] === 'stream_error' || (f[3] === 'phx_reply' && f[4].status === 'error')));
  }
  const vals = [...META, ALL];
  const hist = (await historyOf(`sec-${RUN}-plp`, t)).filter((m) => m.role === 'user');
  assert.deepEqual(hist.map((m) => m.content), vals.map((v) => `${v} ${FAST}`));
  hist.forEach((m, i) => assert.equal(m.metadata.v, vals[i]));
  // a topic with metacharacters: the join refused (bad_input); a \u0000
  // in the query: bad_input (malformed message); a raw NUL, one in the
  // topic, one after the frame: nothing readable, dropped unanswered
  // (docs/protocol-phoenix.md); a heartbeat after them in the same POST is
  // answered
  const n = userMsgs(user(who));
  const bad = [JSON.stringify(['1', '90', topic, 'query', { query: NUL }]), `["1","91","${topic}","query",{"query":"raw\u0000nul"}]`,
    JSON.stringify(['1', '92', `proxy:${ALL}`, 'phx_join', {}]), JSON.stringify(['1', '93', `proxy:${NUL}`, 'phx_join', {}]),
    `["1","94","${topic}","query",{"query":"cut ${FAST}"}]\u0000junk`, JSON.stringify([null, 'hb', 'phoenix', 'heartbeat', {}])];
  r = await lp('POST', { auth: t, token: T, body: bad.join('\n'), type: 'application/x-ndjson' });
  assert.equal(r.json?.status, 200, r.text);
  const replies = await lpCollect(t, T, (g) => g.some((f) => f[1] === 'hb'));
  const f92 = replies.find((y) => y[1] === '92');
  assert.equal(f92?.[4].status, 'error', JSON.stringify(replies));
  assert.equal(f92[4].response.code, 'bad_input', JSON.stringify(f92));
  const f90 = replies.find((y) => y[1] === '90');
  assert.deepEqual(f90?.[4], { status: 'error', response: { reason: 'malformed message', code: 'bad_input' } }, JSON.stringify(replies));
  for (const x of ['91', '93', '94']) assert.ok(!replies.some((y) => y[1] === x), `frame ${x} answered: ${JSON.stringify(replies)}`);
  await sleep(300);
  assert.equal(userMsgs(user(who)), n, 'a NUL query was stored');
  // LongPoll's token (?token=) with metacharacters: a new session (410), never 500
  for (const v of [...META, ALL, NUL]) {
    const g = await lp('GET', { auth: t, token: v });
    if (v === NUL && g.http === 400 && !g.json) continue;    // lighttpd refuses %00 in a URL
    assert.equal(g.http, 200, g.text);
    assert.equal(g.json.status, 410, g.text);
    const p = await lp('POST', { auth: t, token: v, body: '[]', type: 'application/x-ndjson' });
    assert.ok(p.http < 500 && p.json?.status === 410, p.text);
  }
});
test('Phoenix LongPoll: metacharacters in queries and metadata stored byte-exact; a topic with metacharacters refused (bad_input); a \\u0000 query answered bad_input, unreadable NUL frames dropped; nothing stored; a hostile ?token= is a new session (410)', () => phxLp);

// seed 004 (SSE) and the REST session fields.
const s004Fields = early('s004Fields', async () => {
  await canaryReady;
  const who = 'sse';
  const t = tok(who);
  const vals = [...META, ALL];
  const c = await http('POST', '/api/chat/sessions', { token: t, json: { kind: 'sse', title: ALL, metadata: { [ALL]: ALL }, settings: { lang: ALL } } });
  assert.equal(c.status, 201, c.text);
  const id = c.json.id;
  for (const v of vals) {
    const r = await http('POST', '/api/chat/send', { token: t, json: { conversationId: id, content: `${v} ${FAST}` } });
    assert.equal(r.status, 200, r.text);
    assert.match(r.text, /"done": *true/);
    assert.doesNotMatch(r.text, /"error"/);
  }
  const hist = (await historyOf(id, t)).filter((m) => m.role === 'user');
  assert.deepEqual(hist.map((m) => m.content), vals.map((v) => `${v} ${FAST}`));
  const s = await sessionOf(id, t);
  assert.equal(s.title, ALL);
  assert.equal(s.metadata[ALL], ALL);
  // titles, metadata with each value; project_id refused
  for (const v of vals) {
    const r = await http('POST', '/api/chat/sessions', { token: t, json: { kind: 'sse', title: v, metadata: { [v]: v } } });
    assert.equal(r.status, 201, r.text);
    const g = await sessionOf(r.json.id, t);
    assert.equal(g.title, v);
    assert.equal(g.metadata[v], v);
    const pj = await http('POST', '/api/chat/sessions', { token: t, json: { kind: 'sse', project_id: v } });
    if (validId(v)) assert.equal(pj.status, 201, pj.text);    // "--", "_": allowed characters
    else refused(pj, 400, 'bad_input', `project_id ${v}`);
  }
  const n = userMsgs(user(who));
  const nc = userConvs(user(who));
  // NUL: JSON in content, title, metadata, settings; raw; after the body
  for (const b of [JSON.stringify({ conversationId: id, content: NUL }), `{"conversationId":"${id}","content":"raw\u0000nul"}`,
    `{"conversationId":"${id}","content":"a ${FAST}"}\u0000junk`]) {
    refused(await http('POST', '/api/chat/send', { token: t, body: b, headers: { 'Content-Type': 'application/json' } }), 400, 'bad_input', JSON.stringify(b));
  }
  for (const j of [{ title: NUL }, { metadata: { k: NUL } }, { metadata: { [NUL]: 1 } }, { settings: { k: NUL } }, { project_id: NUL }, { kind: NUL }]) {
    refused(await http('POST', '/api/chat/sessions', { token: t, json: j }), 400, 'bad_input', JSON.stringify(j));
  }
  // conversationId with metacharacters / NUL: 400 or 404, nothing stored
  for (const v of [...vals, NUL]) {
    const r = await http('POST', '/api/chat/send', { token: t, json: { conversationId: v, content: `x ${FAST}` } });
    assert.ok([400, 404].includes(r.status), `conversationId ${JSON.stringify(v)}: ${r.status} ${r.text}`);
    assert.equal(r.json?.success, false, r.text);
  }
  assert.equal(userMsgs(user(who)), n);
  assert.equal(userConvs(user(who)), nc);
  // query parameters of the REST routes
  const admin = jwtHS256(SECRET, user('admin'), { role: 'admin' });
  for (const v of [...vals, NUL]) {
    const e = encodeURIComponent(v);
    for (const p of [`/api/chat/sessions?limit=${e}`, `/api/chat/sessions?offset=${e}`, `/api/chat/sessions?kind=${e}`,
      `/api/chat/sessions?project_id=${e}`, `/api/chat/sessions/${id}/messages?limit=${e}`, `/api/chat/sessions/${e}`,
      `/api/chat/sessions/${e}/messages`, `/api/usage?day=${e}`, `/api/chat/sessions?token=${e}`, `/api/usage?user=${e}`,
      `/api/admin/overview?day=${e}`, `/api/admin/generations?limit=${e}`, `/api/admin/connections?user=${e}`, `/api/metrics?x=${e}`,
      `/api/ai-sdk/chat/${e}/stream`, `/v1/models?limit=${e}`, `/api/openapi.json?${e}`, `/socket/longpoll?vsn=${e}&auth_token=${t}`]) {
      // as the user, and as an admin (role claim) for whom the admin
      // routes read their parameters
      for (const tk of [t, admin]) {
        const r = await http('GET', p, { token: tk });
        not500(r, p);
        // lighttpd itself answers a %00 in the URL with its own 400 page
        if (v === NUL && r.status === 400 && !r.json) continue;
        // 204: the AI SDK resume route's "nothing runs"
        if (r.status === 204) assert.equal(r.text, '', `${p}: ${r.text}`);
        else if (r.status !== 200) assert.equal(r.json?.success, false, `${p}: ${r.text}`);
      }
    }
    not500(await http('POST', `/api/admin/generations/${e}/stop`, { token: admin, json: {} }), `admin stop ${JSON.stringify(v)}`);
    // an admin's ?user= is a user name, never SQL: that "user" has used nothing
    if (v !== NUL) {
      const u = await http('GET', `/api/usage?user=${e}`, { token: admin });
      assert.equal(u.status, 200, u.text);
      assert.equal(u.json.user, v, u.text);
      assert.equal(u.json.tokens, 0, u.text);
      assert.equal(u.json.generations, 0, u.text);
    }
    for (const [m, p] of [['DELETE', `/api/chat/sessions/${e}`], ['POST', `/api/chat/sessions/${e}/stop`],
      ['POST', `/api/chat/sessions/${id}/messages/${e}/reactions`]]) {
      const r = await http(m, p, { token: t, json: m === 'POST' ? { helpful: true } : undefined });
      not500(r, `${m} ${p}`);
    }
    // a rating that is not a number: bad_input
    refused(await http('POST', `/api/chat/sessions/${id}/messages/${hist[0].id}/reactions`, { token: t, json: { rating: v } }), 400, 'bad_input', 'rating');
  }
  const lst = await http('GET', `/api/chat/sessions?kind=sse&limit=100`, { token: t });
  assert.equal(lst.status, 200, lst.text);
  assert.equal(lst.json.total, nc, 'a hostile query parameter widened the list');
});
test('seed 004 SSE and the REST session: metacharacters in content, title, metadata, settings stored byte-exact; NUL (JSON, raw, trailing) and bad project_id/conversationId refused; hostile query parameters on every GET route never 500 (as a user and as an admin; the ?user= of an admin is a name, never SQL)', () => s004Fields);

// OpenAI-compatible API: messages, model, user.
const openaiFields = early('openaiFields', async () => {
  await canaryReady;
  const t = tok('oai');
  const models = await http('GET', '/v1/models', { token: t });
  assert.equal(models.status, 200, models.text);
  const model = models.json.data[0].id;
  for (const v of [...META, ALL]) {
    const r = await http('POST', '/v1/chat/completions', { token: t, json: { model, messages: [{ role: 'user', content: `${v} ${FAST}` }], user: v } });
    assert.equal(r.status, 200, `${JSON.stringify(v)}: ${r.text.slice(0, 300)}`);
    assert.equal(r.json.object, 'chat.completion', r.text.slice(0, 300));
    const m = await http('POST', '/v1/chat/completions', { token: t, json: { model: v, messages: [{ role: 'user', content: 'x' }] } });
    assert.equal(m.status >= 400 && m.status < 500, true, `model ${JSON.stringify(v)}: ${m.status} ${m.text.slice(0, 300)}`);
    assert.ok(m.json?.error, m.text.slice(0, 300));
  }
  for (const body of [{ model, messages: [{ role: 'user', content: NUL }] }, { model: NUL, messages: [{ role: 'user', content: 'x' }] },
    { model, messages: [{ role: 'user', content: 'x' }], user: NUL }, { model, messages: [{ role: NUL, content: 'x' }] }]) {
    const r = await http('POST', '/v1/chat/completions', { token: t, json: body });
    assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.status} ${r.text.slice(0, 300)}`);
    assert.ok(r.json?.error, r.text);
  }
  const raw = await http('POST', '/v1/chat/completions', { token: t, headers: { 'Content-Type': 'application/json' },
    body: `{"model":"${model}","messages":[{"role":"user","content":"a ${FAST}"}]}\u0000junk` });
  assert.equal(raw.status, 400, raw.text.slice(0, 300));
  for (const v of [...META, ALL, NUL]) not500(await http('GET', `/v1/models?x=${encodeURIComponent(v)}`, { token: t }), 'models');
});
test('OpenAI API: metacharacters in messages and user answered (200), in model refused (4xx error object); NUL anywhere refused with 400', () => openaiFields);

// AI SDK UI message stream: the question's text and the UI message id
// (kept as the stored message's metadata.ui_message_id), the chat id;
// POST /api/chat/export's members; the resume route's id.
const aisdkFields = early('aisdkFields', async () => {
  await canaryReady;
  const who = 'aisdk';
  const t = tok(who);
  const chat = `sec-${RUN}-ai`;
  const body = (uid, text, id = chat) => ({ id, messages: [{ id: uid, role: 'user', parts: [{ type: 'text', text }] }], trigger: 'submit-message' });
  const vals = [...META, ALL];
  for (const v of vals) {
    const r = await http('POST', '/api/ai-sdk/chat', { token: t, json: body(v, `${v} ${FAST}`) });
    assert.equal(r.status, 200, `${JSON.stringify(v)}: ${r.text.slice(0, 300)}`);
    assert.match(r.text, /"type":"finish"/, r.text.slice(0, 300));
    assert.doesNotMatch(r.text, /"type":"error"/, r.text.slice(0, 300));
  }
  const hist = (await historyOf(chat, t)).filter((m) => m.role === 'user');
  assert.deepEqual(hist.map((m) => m.content), vals.map((v) => `${v} ${FAST}`));
  assert.deepEqual(hist.map((m) => m.metadata.ui_message_id), vals);
  const n = userMsgs(user(who));
  const nc = userConvs(user(who));
  // NUL (JSON \u0000 in the text, the UI id, the chat id; raw; after the
  // body), a chat id with metacharacters, a UI id over 256 bytes (metadata
  // is bounded) and of 900 KB: 400 bad_input, nothing stored
  const bad = [JSON.stringify(body('u', NUL)), JSON.stringify(body(NUL, 'x')), JSON.stringify(body('u', 'x', NUL)),
    `{"id":"${chat}","messages":[{"id":"u","role":"user","parts":[{"type":"text","text":"raw\u0000nul"}]}]}`,
    `${JSON.stringify(body('u', `a ${FAST}`))}\u0000junk`,
    ...vals.map((v) => JSON.stringify(body('u', `x ${FAST}`, `a${v}`))).filter((b, i) => !validId(`a${vals[i]}`)),
    JSON.stringify(body('u'.repeat(257), `x ${FAST}`)), JSON.stringify(body('u'.repeat(900 * 1024), `x ${FAST}`))];
  for (const b of bad) {
    refused(await http('POST', '/api/ai-sdk/chat', { token: t, body: b, headers: { 'Content-Type': 'application/json' } }),
      400, 'bad_input', b.slice(0, 120));
  }
  assert.equal(userMsgs(user(who)), n, 'a refused AI SDK request stored a message');
  assert.equal(userConvs(user(who)), nc, 'a refused AI SDK request created a chat');
  // export and resume with hostile ids and members: 4xx, never 500
  for (const v of [...vals, NUL]) {
    for (const j of [{ session_id: v }, { session_id: chat, format: v }, { session_id: [v] }]) {
      const r = await http('POST', '/api/chat/export', { token: t, json: j });
      not500(r, `export ${JSON.stringify(j)}`);
      assert.ok(r.status >= 400 && r.json?.success === false, `export ${JSON.stringify(j)}: ${r.status} ${r.text.slice(0, 200)}`);
    }
    const e = encodeURIComponent(v);
    for (const p of [`/api/ai-sdk/chat/${e}/stream`, `/api/tickets/${e}/ai/stream`]) {
      const r = await http('GET', p, { token: t });
      not500(r, p);
    }
  }
  const ex = await http('POST', '/api/chat/export', { token: t, json: { session_id: chat } });
  assert.equal(ex.status, 200, ex.text.slice(0, 300));
  assert.deepEqual(ex.json.messages.filter((m) => m.role === 'user').map((m) => m.content), vals.map((v) => `${v} ${FAST}`));
});
test('AI SDK: metacharacters in the question and the UI message id stored byte-exact; NUL, a hostile chat id, a UI id over 256 bytes refused (400 bad_input), nothing stored; export and resume with hostile members never 500', () => aisdkFields);

// ---- 2. 10 MB bodies and frames ------------------------------------------------

// POST a body of n bytes (Content-Length) in pieces; resolves with the
// answer even when the server answers and closes before reading it all.
function bigPost(path, token, n, type = 'application/json') {
  return new Promise((resolve, reject) => {
    const body = Buffer.alloc(n, 0x20);
    Buffer.from('{"x":"').copy(body);
    const req = netConnect(Number(URLB.port), URLB.hostname);
    let out = '';
    let done = false;
    req.setTimeout(60000 * SLOW, () => req.destroy());
    req.on('data', (d) => { out += d.toString('latin1'); });
    req.on('close', () => { done = true; resolve(parseRaw(out)); });
    req.on('error', () => {});
    req.write(`POST ${path} HTTP/1.1\r\nHost: ${URLB.host}\r\nAuthorization: Bearer ${token}\r\nContent-Type: ${type}\r\n` +
      `Content-Length: ${n}\r\nConnection: close\r\n\r\n`);
    let off = 0;
    const more = () => {
      while (off < n && !done && !req.destroyed && !out) {
        const ok = req.write(body.subarray(off, off + 65536));
        off += 65536;
        if (!ok) { req.once('drain', more); return; }
      }
    };
    more();
    void reject;
  });
}
function parseRaw(out) {
  const m = out.match(/^HTTP\/1\.[01] (\d{3})[^\r]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/);
  if (!m) return { status: 0, text: out.slice(0, 200) };
  let text = m[3];
  if (/transfer-encoding: *chunked/i.test(m[2])) {
    let rest = text; text = '';
    for (;;) {
      const i = rest.indexOf('\r\n');
      const len = parseInt(rest.slice(0, i), 16);
      if (!(len > 0)) break;
      text += rest.slice(i + 2, i + 2 + len);
      rest = rest.slice(i + 4 + len);
    }
  }
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: Number(m[1]), type: (m[2].match(/content-type: *([^\r]*)/i) || [])[1] || '', text, json };
}

const bigBodies = early('bigBodies', async () => {
  await canaryReady;
  const who = 'big';
  const t = tok(who);
  const c = await http('POST', '/api/chat/sessions', { token: t, json: { kind: 'sse' } });
  assert.equal(c.status, 201, c.text);
  const o = await pollOpen(t, `/ws/sec-${RUN}-big`);
  assert.equal(o.status, 200, o.text);
  const first = await lp('GET', { auth: t });
  const T = first.json.token;
  const ten = 10 * 1024 * 1024;
  const n0 = userMsgs(user(who)); const c0 = userConvs(user(who));
  const routes = ['/api/chat/send', '/api/chat/sessions', '/api/chat/export', `/api/chat/sessions/${c.json.id}/stop`,
    `/api/chat/sessions/${c.json.id}/messages/x/reactions`, '/api/tickets/T-1/ai/stop', '/api/admin/generations/x/stop',
    '/api/poll/open', `/api/poll/${o.json.sid}`, '/api/ai-sdk/chat', '/v1/chat/completions'];
  const res = await Promise.all(routes.map((p) => bigPost(p, t, ten)));
  res.forEach((r, i) => {
    assert.equal(r.status, 413, `${routes[i]}: ${r.status} ${r.text.slice(0, 200)}`);
    assert.match(r.type, /json/, `${routes[i]}: ${r.type}`);
    // the dispatcher's refusal: Parley's body on every route, /v1 too (docs/openai.md)
    assert.equal(r.json?.success, false, r.text.slice(0, 200));
    assert.equal(r.json.code, 'too_large', r.text.slice(0, 200));
  });
  // Phoenix LongPoll POST: its 413 (HTTP, or the body's status)
  const pl = await bigPost(`/socket/longpoll?vsn=2.0.0&auth_token=${t}&token=${T}`, t, ten, 'application/x-ndjson');
  assert.ok(pl.status === 413 || pl.json?.status === 413, `Phoenix LongPoll POST: ${pl.status} ${pl.text.slice(0, 200)}`);
  // 10 MB WebSocket frames (seeds 000, 001, 002 and Phoenix), all at once:
  // each connection closed with 1009. The bounded wait's timer is unref'd
  // (a ref'd one would keep this file alive long after its tests).
  const content = 'x'.repeat(ten);
  await Promise.all([`${WSB}/ws/sec-${RUN}-bigws?token=${t}`, `${WSB}/socket/websocket?vsn=2.0.0&auth_token=${t}`,
    `${WSB}/api/websocket/chat/sec-${RUN}-bigt?token=${t}`, `${WSB}/ws/chat/techpro?token=${t}`].map(async (url) => {
    const ws = await connect(url);
    ws.ws.send(url.includes('socket/websocket') ? JSON.stringify(['1', '1', `proxy:sec-${RUN}-bigp`, 'phx_join', { pad: content }])
      : JSON.stringify({ type: 'message', content, ticketBody: content }));
    const cl = await Promise.race([ws.closed, sleep(30000 * SLOW, null, { ref: false })]);
    assert.ok(cl, `${url}: still open after a 10 MB frame`);
    assert.equal(cl.code, 1009, `${url}: ${JSON.stringify(cl)}`);
  }));
  await sleep(300);
  assert.equal(userMsgs(user(who)), n0, 'something of a 10 MB body was stored');
  assert.equal(userConvs(user(who)), c0 + 1, 'a 10 MB body created a session');    // the seed 001 one is created at connect
  // alive: the same routes work with small bodies
  const ok = await http('POST', '/api/chat/send', { token: t, json: { conversationId: c.json.id, content: `after ${FAST}` } });
  assert.equal(ok.status, 200, ok.text);
  const ws = await connect(`${WSB}/ws/sec-${RUN}-after?token=${t}`);
  await until(ws, (m) => m.type === 'connected');
  ws.ws.close();
});
test('10 MB bodies on every POST route (REST, long-poll, Phoenix LongPoll, OpenAI, AI SDK): 413 too_large JSON; 10 MB WebSocket frames (seeds 000, 001, 002, Phoenix): close 1009; nothing stored; both servers still serve', () => bigBodies);

// ---- 3. NDJSON batches of 100,000 lines ------------------------------------------

const ndjson = early('ndjson', async () => {
  await canaryReady;
  const who = 'ndjson';
  const t = tok(who);
  const o = await pollOpen(t, `/ws/sec-${RUN}-nd`);
  assert.equal(o.status, 200, o.text);
  const sid = o.json.sid;
  const send = (body) => http('POST', `/api/poll/${sid}`, { token: t, body, headers: { 'Content-Type': 'application/x-ndjson' } });
  const n0 = userMsgs(user(who));
  const q = `{"type":"message","content":"q ${FAST}"}`;
  // 100,000 one-line frames under the 1 MB body limit ("{}": 300 KB):
  // 413 too_large (256 frames per POST), nothing handled
  let r = await send(Array(100000).fill('{}').join('\n'));
  refused(r, 413, 'too_large', '100,000 {} lines');
  // 100,000 messages (over the body limit too): 413
  r = await send(Array(100000).fill(q).join('\n'));
  refused(r, 413, 'too_large', '100,000 message lines');
  // a message first, then 99,999 more lines: nothing applied
  r = await send([q, ...Array(99999).fill('{"type":"ping"}')].join('\n'));
  refused(r, 413, 'too_large', 'message + 99,999 pings');
  // 100,000 blank lines around one frame: blank lines are not frames
  r = await send(`${'\n'.repeat(50000)}{"type":"ping"}${'\r\n'.repeat(50000)}`);
  assert.equal(r.status, 202, r.text.slice(0, 300));
  assert.equal(r.json.accepted, 1, r.text);
  const got = await pollUntil(t, sid, (m) => m.some((x) => x.type === 'pong'));
  assert.equal(got.filter((x) => x.type === 'pong').length, 1);
  await sleep(300);
  assert.equal(userMsgs(user(who)), n0, 'a refused batch stored a message');
  // Phoenix LongPoll: at most 100 parts handled per POST (documented);
  // 100,000 heartbeats is over the body limit: 413; 100,000 "[]" lines
  // (300 KB): 200, the first 100 handled (dropped as malformed, no reply)
  const first = await lp('GET', { auth: t });
  const T = first.json.token;
  const hb = (i) => JSON.stringify([null, `h${i}`, 'phoenix', 'heartbeat', {}]);
  let p = await lp('POST', { auth: t, token: T, type: 'application/x-ndjson',
    body: Array.from({ length: 100000 }, (_, i) => hb(i)).join('\n') });
  assert.ok(p.http === 413 || p.json?.status === 413, `100,000 heartbeats: ${p.http} ${p.text.slice(0, 200)}`);
  p = await lp('POST', { auth: t, token: T, type: 'application/x-ndjson', body: Array(100000).fill('[]').join('\n') });
  assert.equal(p.json?.status, 200, p.text.slice(0, 200));
  // 100,000 lines of which the first 150 are heartbeats that fit: exactly
  // 100 replies (ignored beyond, as Phoenix)
  const body = [...Array.from({ length: 150 }, (_, i) => hb(i)), ...Array(99850).fill('')].join('\n');
  p = await lp('POST', { auth: t, token: T, type: 'application/x-ndjson', body });
  assert.equal(p.json?.status, 200, p.text.slice(0, 200));
  const replies = await lpCollect(t, T, (g) => g.filter((f) => f[3] === 'phx_reply').length >= 100);
  await sleep(500);
  const more = await lp('GET', { auth: t, token: T });
  const all = [...replies, ...(more.json.messages || []).map((s) => JSON.parse(s))].filter((f) => f[3] === 'phx_reply');
  assert.equal(all.length, 100, `replies: ${all.length}`);
  assert.deepEqual(all.map((f) => f[1]), Array.from({ length: 100 }, (_, i) => `h${i}`));
});
test('NDJSON of 100,000 lines: Parley long-poll refuses 100,000 frames with 413 too_large and applies none (also after a valid first line); blank lines are skipped; Phoenix LongPoll handles the first 100 parts only, a 100,000-heartbeat body is 413', () => ndjson);

// ---- 5. session metadata of 1 MB ------------------------------------------------

const sessionMeta = early('sessionMeta', async () => {
  await canaryReady;
  const who = 'smeta';
  const t = tok(who);
  const c0 = userConvs(user(who));
  // 1 MB of metadata: over the body limit
  const mb = 'x'.repeat(1024 * 1024);
  for (const json of [{ metadata: { big: mb } }, { settings: { big: mb } }]) {
    const r = await http('POST', '/api/chat/sessions', { token: t, json });
    refused(r, 413, 'too_large', Object.keys(json)[0]);
  }
  // under the body limit but over message metadata's 8 KB: refused too,
  // with bad_input (as a message's metadata), nothing stored
  for (const size of [8193, 9 * 1024, 900 * 1024]) {
    for (const k of ['metadata', 'settings']) {
      const r = await http('POST', '/api/chat/sessions', { token: t, json: { kind: 'sse', [k]: { big: 'y'.repeat(size) } } });
      refused(r, 400, 'bad_input', `${k} of ${size} bytes`);
      assert.match(r.json.message, /too large/i, r.text);
    }
  }
  assert.equal(userConvs(user(who)), c0, 'an oversized session metadata was stored');
  // at the bound (8,192 bytes of JSON): stored
  const inner = 8192 - JSON.stringify({ big: '' }).length;
  const r = await http('POST', '/api/chat/sessions', { token: t, json: { kind: 'sse', metadata: { big: 'z'.repeat(inner) } } });
  assert.equal(r.status, 201, r.text.slice(0, 300));
  assert.equal((await sessionOf(r.json.id, t)).metadata.big.length, inner);
  // a message's metadata over 8 KB is refused the same way (seed 001)
  const { ends } = await s001(`sec-${RUN}-mm`, t, [{ type: 'message', content: `m ${FAST}`, metadata: { big: 'w'.repeat(9000) } }]);
  assert.equal(ends[0].type, 'error', JSON.stringify(ends));
  assert.equal(ends[0].code, 'bad_input');
  // ... and over long-poll, 900 KB of it in one frame (no WebSocket frame
  // cap on that path): the protocol's bad_input frame
  const n0 = userMsgs(user(who));
  const lo = await pollOpen(t, `/ws/sec-${RUN}-mlp`);
  assert.equal(lo.status, 200, lo.text);
  const lpost = await http('POST', `/api/poll/${lo.json.sid}`, { token: t,
    body: JSON.stringify({ type: 'message', content: `m ${FAST}`, metadata: { big: 'v'.repeat(900 * 1024) } }) });
  assert.equal(lpost.status, 202, lpost.text.slice(0, 300));
  const lend = (await pollUntil(t, lo.json.sid, (m) => m.some(endOf('stream_end')))).find(endOf('stream_end'));
  assert.equal(lend.type, 'error', JSON.stringify(lend));
  assert.equal(lend.code, 'bad_input', JSON.stringify(lend));
  // what a seed 001 connection records in the session's metadata
  // (user_agent, client_version) stays small whatever the client sends: a
  // 200 KB ?client_version= in a long-poll open's path, a 2 KB User-Agent
  // and a 1 KB X-Client-Version (lighttpd refuses more than 8 KB of headers)
  const ho = await http('POST', '/api/poll/open', { token: t, json: { path: `/ws/sec-${RUN}-mh?client_version=${'c'.repeat(200 * 1024)}` },
    headers: { 'User-Agent': 'u'.repeat(2048), 'X-Client-Version': 'x'.repeat(1024) } });
  assert.equal(ho.status, 200, ho.text.slice(0, 300));
  const hm = (await sessionOf(`sec-${RUN}-mh`, t)).metadata;
  assert.ok(JSON.stringify(hm).length <= 1024, `a session's recorded client metadata of ${JSON.stringify(hm).length} bytes`);
  assert.equal(hm.user_agent, 'u'.repeat(512));
  assert.equal(hm.client_version, 'x'.repeat(128));
  // Phoenix (WebSocket and LongPoll): a query's metadata over 8,192 bytes
  // is invalid_metadata (bad_input); a frame over 64 KiB is too_large;
  // nothing stored
  const pw = await connect(`${WSB}/socket/websocket?vsn=2.0.0&auth_token=${t}`);
  try {
    const reply = async (ref, frame) => {
      pw.ws.send(JSON.stringify(frame));
      await pw.until((m) => m.some((f) => f[1] === ref && f[3] === 'phx_reply'), 20000 * SLOW);
      return pw.msgs.find((f) => f[1] === ref && f[3] === 'phx_reply')[4];
    };
    const topic = `proxy:sec-${RUN}-pm`;
    assert.equal((await reply('j', ['j', 'j', topic, 'phx_join', {}])).status, 'ok');
    let rep = await reply('m9', ['j', 'm9', topic, 'query', { query: `m ${FAST}`, metadata: { big: 'p'.repeat(9000) } }]);
    assert.equal(rep.status, 'error', JSON.stringify(rep));
    assert.equal(rep.response.error, 'invalid_metadata', JSON.stringify(rep));
    assert.equal(rep.response.code, 'bad_input', JSON.stringify(rep));
    rep = await reply('m100', ['j', 'm100', topic, 'query', { query: `m ${FAST}`, metadata: { big: 'p'.repeat(100 * 1024) } }]);
    assert.equal(rep.status, 'error', JSON.stringify(rep));
    assert.equal(rep.response.code, 'too_large', JSON.stringify(rep));
  } finally { pw.ws.close(); }
  const T = (await lp('GET', { auth: t })).json.token;
  const ptopic = `proxy:sec-${RUN}-pml`;
  let pr = await lp('POST', { auth: t, token: T, type: 'application/x-ndjson', body: [JSON.stringify(['j', 'j', ptopic, 'phx_join', {}]),
    JSON.stringify(['j', 'm9', ptopic, 'query', { query: `m ${FAST}`, metadata: { big: 'q'.repeat(9000) } }]),
    JSON.stringify(['j', 'm900', ptopic, 'query', { query: `m ${FAST}`, metadata: { big: 'q'.repeat(900 * 1024) } }])].join('\n') });
  assert.equal(pr.json?.status, 200, pr.text.slice(0, 300));
  const got = await lpCollect(t, T, (g) => g.some((f) => f[1] === 'm900'));
  const rj = got.find((f) => f[1] === 'j')[4];
  const r9 = got.find((f) => f[1] === 'm9')[4];
  const r900 = got.find((f) => f[1] === 'm900')[4];
  assert.equal(rj.status, 'ok', JSON.stringify(rj));
  assert.equal(r9.status, 'error', JSON.stringify(r9));
  assert.equal(r9.response.code, 'bad_input', JSON.stringify(r9));
  assert.equal(r900.status, 'error', JSON.stringify(r900));
  assert.equal(r900.response.code, 'too_large', JSON.stringify(r900));
  await sleep(300);
  assert.equal(userMsgs(user(who)), n0, 'an oversized metadata was stored');
});
test('metadata everywhere it is accepted: session metadata/settings of 1 MB 413 too_large, over 8 KB 400 bad_input, 8 KB stored; message metadata over 8 KB refused (seed 001 WebSocket and long-poll, 900 KB), Phoenix query metadata over 8 KB invalid_metadata and frames over 64 KiB too_large (WebSocket and LongPoll); the client metadata a seed 001 connection records stays bounded', () => sessionMeta);

// ---- the canary, last ----------------------------------------------------------

test('the canary user\'s session and messages, the catalogue and the schema are unchanged; the database consistent (integrity_check, no orphan rows)', async () => {
  const before = await canaryReady;
  if (ONLY) return;
  await Promise.allSettled([s001Content, s001Session, rawHeaders, pollFields, s000Fields, s002Fields, phxWs, phxLp,
    s004Fields, openaiFields, aisdkFields, bigBodies, ndjson, sessionMeta]);
  assert.equal(canarySnapshot(), before.snap);
  assert.equal(userMsgs(user(CANARY)), before.msgs);
  assert.equal(consistency(), 'ok');
  const h = await http('GET', '/api/health');
  assert.equal(h.status, 200, h.text);
});

void phxFrames;
