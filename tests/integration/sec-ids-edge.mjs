// sec-ids-edge.mjs — the edges of issue 13 item 3 that are not a user's
// objects (sec-ids.mjs has those), run by t0950-sec-ids.sh against the same
// setup: lighttpd (the shipped snippet) in front of parley.fcgi, the
// WebSocket paths proxied to parley-ws, PARLEY_ALLOWED_ORIGINS=$GOOD,
// PARLEY_TENANT_CLAIM=org.
//
//   Origin and CORS   a foreign Origin (another host, scheme, port, a
//                     suffix trick, "null", one of 600 bytes) on every
//                     WebSocket path (/api/websocket/chat/<ticket>,
//                     /ws/<id>, /ws/chat/<brand>, /socket/websocket),
//                     through lighttpd and straight at the bridge: 403
//                     before the upgrade; $GOOD: the upgrade happens.
//                     Preflights (OPTIONS) and plain requests from a
//                     foreign Origin on the REST, SSE, long-poll, Phoenix
//                     LongPoll, OpenAI and AI SDK routes and the WebSocket
//                     paths: refused, never an Access-Control-Allow-Origin;
//                     $GOOD's preflight gets it
//   bridge /metrics   not reachable through the web server (also with
//   and /healthz      dot-segments and encoded slashes in WebSocket paths),
//                     404 at the bridge for a request carrying a proxy's
//                     headers, not listening on a non-loopback address;
//                     no user's name in its text
//   /api/metrics      401 without a token, 403 for a user, 200 for an
//                     admin (counts, no user names)
//   tenants           another tenant's stored ticket id (<id>~<hash>, what
//                     core stores) named on REST, SSE, WebSocket and
//                     long-poll: refused, never the other tenant's answer
//                     (t0890 has the rest of the tenant checks)
//
//   BASE=http://127.0.0.1:PORT BRIDGE=http://127.0.0.1:WSPORT GOOD=https://... \
//     FAKE_LLM_URL=... SECRET=... RUN=tag node --test tests/integration/sec-ids-edge.mjs
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { networkInterfaces } from 'node:os';
import { test } from 'node:test';
import WebSocket from 'ws';
import { answerText } from '../fake-llm/answer.mjs';
import { api as apiCall, connect, jwtHS256, SLOW } from '../node/clients.mjs';

const BASE = process.env.BASE;
const BRIDGE = process.env.BRIDGE;
const GOOD = process.env.GOOD;
const SECRET = process.env.SECRET;
if (!BASE || !BRIDGE || !GOOD || !SECRET) throw new Error('BASE, BRIDGE, GOOD and SECRET are required');
const RUN = process.env.RUN || `r${process.pid}`;
const T = { timeout: 60000 * SLOW };

const A = `alice-${RUN}`;
const ALICE = jwtHS256(SECRET, A, { org: 'acme' });
const BOB = jwtHS256(SECRET, `bob-${RUN}`, { org: 'globex' });
const ADMIN = jwtHS256(SECRET, `ops-${RUN}`, { role: 'admin', org: 'acme' });
const api = (method, path, opts) => apiCall(BASE, method, path, opts);

const FOREIGN = ['https://evil.example', 'null', `${GOOD}.evil.example`, GOOD.replace(/^https:/, 'http:'),
  `${GOOD}:8443`, `https://${'a'.repeat(590)}.example`];

// One raw HTTP request (the path sent as written: no URL normalization);
// resolves { status, headers, body }.
function raw(base, method, path, headers = {}, body = null) {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const q = http.request({ host: u.hostname, port: u.port, method, path, headers, timeout: 15000 * SLOW }, (res) => {
      let b = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { b += d; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: b }));
    });
    q.on('timeout', () => q.destroy(new Error(`${method} ${path}: timeout`)));
    q.on('error', (e) => reject(new Error(`${method} ${base}${path}: ${e.message}`)));
    q.end(body ?? undefined);
  });
}

// The WebSocket upgrade of path at base with Origin origin: the HTTP status
// of a refusal, or 101 when it opened (then closed at once).
function upgrade(base, path, origin) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base.replace(/^http/, 'ws')}${path}`, origin ? { origin } : {});
    const t = setTimeout(() => { ws.terminate(); reject(new Error(`${path}: no answer`)); }, 15000 * SLOW);
    ws.on('unexpected-response', (req, res) => { clearTimeout(t); req.destroy(); resolve(res.statusCode); });
    ws.on('open', () => { clearTimeout(t); ws.terminate(); resolve(101); });
    ws.on('error', (e) => { clearTimeout(t); reject(e); });
  });
}

const WS_PATHS = [`/api/websocket/chat/T-o-${RUN}?token=${ALICE}`, `/ws/o-${RUN}?token=${ALICE}`,
  `/ws/chat/acme?token=${ALICE}`, `/socket/websocket?vsn=2.0.0&token=${ALICE}`];

test('Origin: a foreign one is refused (403) on every WebSocket path, through lighttpd and at the bridge; the allowed one opens', T, async () => {
  for (const [where, base] of [['lighttpd', BASE], ['bridge', BRIDGE]]) {
    for (const p of WS_PATHS) {
      const name = `${where} ${p.replace(/\?.*/, '')}`;
      for (const o of FOREIGN)
        assert.equal(await upgrade(base, p, o), 403, `${name} Origin ${o.slice(0, 60)}`);
      assert.equal(await upgrade(base, p, GOOD), 101, `${name} Origin ${GOOD}`);
      assert.equal(await upgrade(base, p, `${GOOD}/`), 101, `${name} Origin ${GOOD}/`);
      assert.equal(await upgrade(base, p, null), 101, `${name} without Origin (not a browser)`);
    }
  }
});

// Routes of parley.fcgi (and the bridge's HTTP front) with the method a
// browser would preflight.
const ROUTES = [['GET', '/api/chat/sessions'], ['POST', '/api/chat/send'], ['POST', '/api/poll/open'],
  ['GET', `/api/poll/lp-${RUN}`], ['GET', '/socket/longpoll?vsn=2.0.0'], ['POST', '/v1/chat/completions'],
  ['POST', '/api/ai-sdk/chat'], ['GET', `/api/tickets/T-c-${RUN}/ai/stream`], ['GET', '/api/metrics'],
  ['DELETE', `/api/chat/sessions/s-${RUN}`]];

test('CORS preflights: a foreign Origin gets no Access-Control-Allow-Origin on any route or WebSocket path; the allowed one does', T, async () => {
  const pre = (origin, method) => ({ origin, 'access-control-request-method': method,
    'access-control-request-headers': 'authorization, content-type' });
  for (const [m, p] of ROUTES) {
    for (const o of FOREIGN) {
      const r = await raw(BASE, 'OPTIONS', p, pre(o, m));
      assert.equal(r.status, 403, `OPTIONS ${p} from ${o.slice(0, 60)}: ${r.status} ${r.body.slice(0, 200)}`);
      assert.equal(r.headers['access-control-allow-origin'], undefined, `OPTIONS ${p} from ${o.slice(0, 60)}`);
      assert.equal(r.headers['access-control-allow-methods'], undefined, `OPTIONS ${p} from ${o.slice(0, 60)}`);
    }
    const g = await raw(BASE, 'OPTIONS', p, pre(GOOD, m));
    assert.ok(g.status === 204 || g.status === 200, `OPTIONS ${p} from ${GOOD}: ${g.status}`);
    assert.equal(g.headers['access-control-allow-origin'], GOOD, `OPTIONS ${p} from ${GOOD}`);
  }
  // the WebSocket paths (lighttpd proxies them to the bridge) and the
  // bridge's own long-poll front; raw() keeps connections alive (Node's
  // global agent), so a refusal that hangs up must say so (Connection:
  // close) or the next request on that connection fails
  for (const [base, p] of [[BASE, `/ws/o-${RUN}`], [BASE, `/api/websocket/chat/T-o-${RUN}`], [BASE, '/ws/chat/acme'],
    [BASE, '/socket/websocket'], [BRIDGE, '/api/poll/open'], [BRIDGE, '/socket/longpoll?vsn=2.0.0'],
    [BRIDGE, `/ws/o-${RUN}`]]) {
    for (const o of FOREIGN) {
      const r = await raw(base, 'OPTIONS', p, pre(o, 'GET'));
      assert.ok(r.status >= 400, `OPTIONS ${base}${p} from ${o.slice(0, 60)}: ${r.status}`);
      assert.equal(r.headers['access-control-allow-origin'], undefined, `OPTIONS ${base}${p} from ${o.slice(0, 60)}`);
    }
  }
});

test('a foreign Origin on plain requests: 403 on REST, SSE, long-poll, Phoenix LongPoll, OpenAI and AI SDK (lighttpd and the bridge\'s front); nothing of alice\'s', T, async () => {
  const json = { 'content-type': 'application/json', authorization: `Bearer ${ALICE}` };
  const reqs = [[BASE, 'GET', '/api/chat/sessions', null], [BASE, 'POST', '/api/chat/send', { content: `edge-${RUN} hi` }],
    [BASE, 'POST', '/api/poll/open', { path: `/ws/o-${RUN}` }], [BASE, 'GET', '/socket/longpoll?vsn=2.0.0', null],
    [BASE, 'POST', '/v1/chat/completions', { model: 'x', messages: [{ role: 'user', content: `edge-${RUN} hi` }] }],
    [BASE, 'POST', '/api/ai-sdk/chat', { id: `ai-o-${RUN}`, messages: [] }],
    [BASE, 'GET', `/api/tickets/T-c-${RUN}/ai/stream`, null], [BASE, 'GET', '/api/metrics', null],
    [BRIDGE, 'POST', '/api/poll/open', { path: `/ws/o-${RUN}` }], [BRIDGE, 'GET', '/socket/longpoll?vsn=2.0.0', null]];
  for (const [base, m, p, body] of reqs) {
    for (const o of FOREIGN) {
      const r = await raw(base, m, p, { ...json, origin: o }, body && JSON.stringify(body));
      assert.equal(r.status, 403, `${m} ${base}${p} from ${o.slice(0, 60)}: ${r.status} ${r.body.slice(0, 200)}`);
      assert.equal(r.headers['access-control-allow-origin'], undefined, `${m} ${p} from ${o.slice(0, 60)}`);
      assert.doesNotMatch(r.headers['content-type'] || '', /event-stream/);
    }
  }
  const g = await raw(BASE, 'GET', '/api/chat/sessions', { ...json, origin: GOOD });
  assert.equal(g.status, 200, g.body);
  assert.equal(g.headers['access-control-allow-origin'], GOOD);
  const fq = await (await fetch(`${process.env.FAKE_LLM_URL}/_fake/requests`)).json();
  assert.ok(!fq.requests.some((q) => q.prompt?.includes(`edge-${RUN}`)), 'a refused request reached the upstream');
});

// ---- the bridge's /metrics and /healthz ----------------------------------

test('the bridge\'s /metrics and /healthz: not through lighttpd (dot-segments, encoded slashes), 404 with a proxy\'s headers, loopback only', T, async () => {
  const paths = ['/metrics', '/healthz', '/ws/../metrics', '/ws/%2e%2e/metrics', '/ws/..%2fmetrics',
    '/ws/%2e%2e%2fhealthz', '/socket/websocket/../../metrics', '/socket/websocket%2f..%2fmetrics',
    '/api/websocket/chat/..%2f..%2f..%2fmetrics', '/api/websocket/chat/%2e%2e/%2e%2e/%2e%2e/healthz',
    '/ws//metrics', '/ws/%2fmetrics'];
  for (const p of paths) {
    const r = await raw(BASE, 'GET', p);
    assert.doesNotMatch(r.body, /parley_ws_|# TYPE/, `GET ${p} through lighttpd: ${r.status}`);
    assert.ok(!(r.status === 200 && r.body === 'ok\n'), `GET ${p} through lighttpd reached /healthz`);
  }
  // what a proxy adds (lighttpd and Apache add X-Forwarded-For; the others
  // are other proxies'): 404
  for (const h of [{ 'x-forwarded-for': '203.0.113.9' }, { via: '1.1 proxy' }, { forwarded: 'for=203.0.113.9' },
    { 'x-forwarded-host': 'help.example' }, { 'x-forwarded-proto': 'https' }]) {
    for (const p of ['/metrics', '/healthz']) {
      const r = await raw(BRIDGE, 'GET', p, h);
      assert.equal(r.status, 404, `GET ${p} with ${JSON.stringify(h)}: ${r.status} ${r.body.slice(0, 100)}`);
      assert.doesNotMatch(r.body, /parley_ws_/);
    }
  }
  // on its loopback socket, for the host
  assert.equal((await raw(BRIDGE, 'GET', '/healthz')).body, 'ok\n');
  const m = await raw(BRIDGE, 'GET', '/metrics');
  assert.equal(m.status, 200);
  assert.match(m.body, /^parley_ws_connections \d+$/m);
  // not on the host's other addresses (the shipped unit: --listen 127.0.0.1)
  const port = Number(new URL(BRIDGE).port);
  const other = Object.values(networkInterfaces()).flat().find((i) => i && !i.internal && i.family === 'IPv4');
  if (other) {
    const e = await raw(`http://${other.address}:${port}`, 'GET', '/healthz').then(() => null, (x) => x);
    assert.ok(e && /ECONNREFUSED|EHOSTUNREACH|ETIMEDOUT|timeout/.test(`${e.code} ${e.message}`),
      `the bridge answers on ${other.address}: ${e}`);
  }
});

test('/api/metrics: 401 without a token, 403 for a user, 200 for an admin; no user name in it or in the bridge\'s /metrics', T, async () => {
  // a user with a name to look for, seen by the bridge
  const c = await connect(`${BASE.replace(/^http/, 'ws')}/ws/m-${RUN}?token=${ALICE}`);
  await c.until((m) => m.some((x) => x.type === 'connected'));
  c.ws.close();
  assert.equal((await api('GET', '/api/metrics')).status, 401);
  const u = await api('GET', '/api/metrics', { token: ALICE });
  assert.equal(u.status, 403, u.text);
  assert.equal(u.json?.code, 'forbidden');
  assert.doesNotMatch(u.text, /parley_/);
  const m = await api('GET', '/api/metrics', { token: ADMIN });
  assert.equal(m.status, 200, m.text.slice(0, 300));
  assert.match(m.text, /^parley_jobs\{state="running"\} \d+$/m);
  const b = await raw(BRIDGE, 'GET', '/metrics');
  for (const [what, text] of [['/api/metrics', m.text], ['the bridge\'s /metrics', b.body]]) {
    assert.ok(!text.includes(RUN), `${what} names a user`);
    assert.doesNotMatch(text, /user="/, what);
  }
  assert.match(b.body, /^parley_ws_users [1-9]\d*$/m);
});

// ---- tenants: the stored id of another tenant's ticket -------------------

test('tenants: bob (globex) naming acme\'s stored ticket id (<id>~<hash>) gets a refusal on REST, SSE, WebSocket and long-poll', T, async () => {
  const id = `T-t-${RUN}`;
  const q = `tenant-${RUN} acme's question [[fake tokens=5 token_ms=1]]`;
  const a = await connect(`${BASE.replace(/^http/, 'ws')}/api/websocket/chat/${id}?token=${ALICE}`);
  a.ws.send(JSON.stringify({ ticketBody: q }));
  const am = await a.until((m) => m.some((x) => x.type === 'done' || x.type === 'error'), 20000 * SLOW);
  a.ws.close();
  const text = am.filter((x) => x.type === 'stream').map((x) => x.content).join('');
  assert.equal(text, answerText(q, 5), JSON.stringify(am).slice(0, 500));
  const hers = await api('GET', `/api/tickets/${id}/ai`, { token: ALICE });
  assert.equal(hers.status, 200, hers.text);
  const stored = `${id}~${createHash('sha256').update('acme').digest('hex').slice(0, 16)}`;
  const enc = encodeURIComponent(stored);
  const secret = answerText(q, 5).slice(0, 20);
  const refused = (r, what) => {
    assert.ok([400, 403, 404].includes(r.status), `${what}: ${r.status} ${r.text?.slice(0, 200)}`);
    assert.ok(!String(r.text).includes(secret), `${what} shows acme's answer`);
  };
  for (const p of [`/api/tickets/${enc}/ai`, `/api/tickets/${stored}/ai`, `/api/tickets/${enc}/ai/stream`]) {
    refused(await api('GET', p, { token: BOB }), `GET ${p}`);
  }
  refused(await api('DELETE', `/api/tickets/${enc}/ai`, { token: BOB }), 'DELETE');
  // long-poll: refused at the open, or its first poll is an error frame
  // and the session closed (what parley.fcgi does: the path is routed
  // before the ticket id is read)
  const lo = await api('POST', '/api/poll/open', { token: BOB, body: { path: `/api/websocket/chat/${stored}` } });
  if (lo.status === 200) {
    const g = await api('GET', `/api/poll/${lo.json.sid}?cursor=0&wait=5`, { token: BOB });
    assert.equal(g.status, 200, g.text);
    assert.equal(g.json.messages[0]?.type, 'error', g.text);
    assert.equal(g.json.closed, true, g.text);
    assert.ok(!g.json.messages.some((x) => x.type === 'stream' || x.type === 'cached'), g.text);
    assert.ok(!g.text.includes(secret), 'long-poll shows acme\'s answer');
  } else {
    refused(lo, 'long-poll open');
  }
  let ws;
  try {
    ws = await connect(`${BASE.replace(/^http/, 'ws')}/api/websocket/chat/${enc}?token=${BOB}`);
  } catch (e) {
    assert.ok([400, 403, 404].includes(e.status), `WebSocket: ${e.message}`);
  }
  if (ws) {
    ws.ws.send(JSON.stringify({ ticketBody: 'anything' }));
    const end = await Promise.race([ws.closed, new Promise((r) => setTimeout(() => r(null), 5000 * SLOW))]);
    assert.ok(end && (end.code === 1008 || end.code >= 4000), `WebSocket on the stored id: ${JSON.stringify(end)} ${JSON.stringify(ws.msgs)}`);
    assert.ok(!JSON.stringify(ws.msgs).includes(secret), 'WebSocket shows acme\'s answer');
    assert.ok(!ws.msgs.some((x) => x.type === 'stream' || x.type === 'cached'), JSON.stringify(ws.msgs));
  }
  // acme's answer is untouched
  const again = await api('GET', `/api/tickets/${id}/ai`, { token: ALICE });
  assert.equal(again.status, 200);
  assert.equal(again.text, hers.text);
});
